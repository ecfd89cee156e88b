import { Counter, Registry } from 'prom-client'

/** Prometheus metrics of one node (scraped at GET /metrics with an admin credential). */
export class Metrics {
  readonly registry = new Registry()
  readonly limitRejections = new Counter({
    name: 'jobwire_limit_rejections_total',
    help: 'Requests refused by a limit, by limit',
    labelNames: ['limit'] as const,
    registers: [this.registry],
  })
}
