import { metrics } from '@opentelemetry/api';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';

/**
 * The sample app's OpenTelemetry metrics: a global MeterProvider whose reader is a Prometheus
 * exporter, scraped through the app's own `GET /metrics` instead of the exporter's server.
 *
 * Set it up BEFORE the Nest app is created: the rate-limit module gets its meter from the global
 * provider when it initializes, and OpenTelemetry's metrics API has no proxy, so a module that
 * starts first keeps a no-op meter for good.
 */
export class SampleTelemetry {
  /** The exporter's own serializer is private: one with the same (default) options. */
  private readonly serializer = new PrometheusSerializer();

  constructor(
    /** Collects cumulative sums, as Prometheus expects. Its HTTP server is never started. */
    readonly exporter: PrometheusExporter,
    readonly provider: MeterProvider,
  ) {}

  /** Every instrument of every meter, in the Prometheus text format (version 0.0.4). */
  async scrape(): Promise<string> {
    const { resourceMetrics, errors } = await this.exporter.collect();
    if (errors.length > 0) throw new AggregateError(errors, 'collecting the metrics failed');
    return this.serializer.serialize(resourceMetrics);
  }
}

let telemetry: SampleTelemetry | undefined;

/**
 * Registers the global MeterProvider, once per process, and returns it with its exporter: later
 * calls return the first one. (`metrics.setGlobalMeterProvider` only works the first time; so
 * every app this process creates, the tests' included, reports to this one provider, and its
 * counters add up across them.)
 */
export function setUpTelemetry(): SampleTelemetry {
  if (telemetry !== undefined) return telemetry;
  // preventServerStart: no second port; GET /metrics answers from the app itself
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({ readers: [exporter] });
  if (!metrics.setGlobalMeterProvider(provider)) {
    throw new Error('Another global OpenTelemetry MeterProvider is already registered: GET /metrics would not see the rate-limit metrics');
  }
  telemetry = new SampleTelemetry(exporter, provider);
  return telemetry;
}
