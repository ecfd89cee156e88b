export {
  createJobwireClient,
  JobwireClient,
  watchJob,
  type ClientOptions,
  type JobListPage,
  type JobListQuery,
  type JobsWatch,
  type JobSummary,
  type JobWatch,
  type MyJobsWatch,
  type WatchJobOptions,
  type WatchJobsOptions,
  type WatchMyJobsOptions,
} from './client.js'
export type { BackoffOptions, ConnectionState, RetryState, StateChange } from './connection.js'
export type { EnvironmentOptions, EventSourceConstructor, EventSourceLike, OnlineSource, Timers, WebSocketConstructor, WebSocketLike } from './environment.js'
export type { JobUpdate, TransportName } from './job-feed.js'
export type { GetToken, TokenRequest } from './tokens.js'
export { isTerminal, jobStatuses, JobwireError, type ErrorCode, type ItemState, type JobState, type JobStatus, type Owner, type Progress } from '@jobwire/protocol'
