export { JobwireBackend, type ApiKeyInfo, type BackendOptions, type NewApiKey, type CreateJob, type JobSummary, type ProducerEvent, type ReportResult } from './client.js'
export { mintSubscriptionToken, type MintOptions, type Right } from './tokens.js'
export { JobwireError, type JobState } from '@jobwire/protocol'
