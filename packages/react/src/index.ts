export { JobwireProvider, useJobwireClient } from './context.js'
export { useJob, useJobResult, useJobs, useMyJobs, type JobResultView, type MyJobsFilter, type MyJobsView, type UseJobOptions, type UseMyJobsOptions } from './hooks.js'
export type { JobConnection, JobView } from './job-view.js'
export { createJobwireClient, JobwireClient, JobwireError, type ClientOptions, type JobState } from '@jobwire/client'
