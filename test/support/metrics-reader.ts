import { metrics } from '@opentelemetry/api';
import { DataPointType, MeterProvider, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics';

/** A reader the test collects from when it wants, instead of on a schedule. */
class CollectingReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

/** One data point: its attributes and value (a number, or a histogram's count). */
export interface Point {
  readonly attributes: Record<string, unknown>;
  readonly value: number;
}

/**
 * Registers a global MeterProvider over an in-memory reader, as an app's OpenTelemetry SDK would,
 * for a test file. The library takes its meter when the module starts: register before.
 */
export function registerTestMetrics() {
  const reader = new CollectingReader();
  const provider = new MeterProvider({ readers: [reader] });
  metrics.setGlobalMeterProvider(provider);
  return {
    /** Every data point of `name` now (cumulative since registration). */
    async points(name: string): Promise<Point[]> {
      const { resourceMetrics } = await reader.collect();
      const all: MetricData[] = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics);
      return all
        .filter((metric) => metric.descriptor.name === name)
        .flatMap((metric) =>
          (metric.dataPoints as { attributes: Record<string, unknown>; value: unknown }[]).map((point) => ({
            attributes: point.attributes,
            value: metric.dataPointType === DataPointType.HISTOGRAM ? (point.value as { count: number }).count : (point.value as number),
          })),
        );
    },
    /** The value of `name` at the data point whose attributes include `match`, or 0. */
    async value(name: string, match: Record<string, unknown> = {}): Promise<number> {
      const points = await this.points(name);
      const found = points.filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v));
      return found.reduce((sum, p) => sum + p.value, 0);
    },
    async stop(): Promise<void> {
      await provider.shutdown();
      metrics.disable();
    },
  };
}
