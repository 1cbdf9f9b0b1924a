import { Inject, Injectable, Logger, Optional, type ExecutionContext } from '@nestjs/common';
import { RATE_LIMIT_METRICS, RateLimitMetrics, type DeniedEventAction } from '../observability/rate-limit-metrics.js';
import { RATE_LIMIT_CONFIG, type RateLimitConfig } from '../rate-limit.config.js';
import { MessageServers } from './message-servers.js';
import type { RateLimitRefusal } from './rate-limit-context-adapter.interface.js';
import { routeName } from '../rules/route-name.js';

/** Nest's handler-type metadata: `@EventPattern` handlers are PatternHandler.EVENT (2). */
const PATTERN_HANDLER_METADATA = 'microservices:handler_type';
const MESSAGE_HANDLER = 1;
const EVENT_HANDLER = 2;

/** The parts of Nest's RmqContext used here. */
interface RmqContextLike {
  getChannelRef(): { ack(message: unknown): void; nack(message: unknown, allUpTo?: boolean, requeue?: boolean): void };
  getMessage(): unknown;
}

/** Transport names by Nest's context classes, for metrics and logs. */
const TRANSPORT_OF_CONTEXT: Readonly<Record<string, string>> = {
  TcpContext: 'tcp',
  RedisContext: 'redis',
  NatsContext: 'nats',
  MqttContext: 'mqtt',
  RmqContext: 'rmq',
  KafkaContext: 'kafka',
};

/**
 * What becomes of a microservice event its limit refused. An event has no reply to carry the
 * refusal, so:
 * - RabbitMQ with manual acknowledgement (`noAck: false`): the broker can keep it. It is nacked,
 *   to the queue's dead-letter exchange or back onto the queue (`rmqDeniedEvents`);
 * - every other transport (and RabbitMQ acknowledging on delivery) has already let go of it:
 *   it is dropped, counted in `ratelimit.events.denied`, and logged once per handler.
 * A refused request (`@MessagePattern`) is answered with its refusal; under RabbitMQ's manual
 * acknowledgement it is acknowledged too, as the handler that did not run would have done.
 */
@Injectable()
export class DeniedEvents {
  private readonly logger = new Logger('RateLimitGuard');
  /** Handlers whose dropped events were logged already: once each, not once per event. */
  private readonly reported = new WeakSet<Function>();

  constructor(
    @Inject(RATE_LIMIT_CONFIG) private readonly config: RateLimitConfig,
    private readonly servers: MessageServers,
    @Optional() @Inject(RATE_LIMIT_METRICS) private readonly metrics: RateLimitMetrics = RateLimitMetrics.disabled(),
  ) {}

  /** Called with every refusal of an `rpc` context, before it is thrown; acts on events only. */
  refused(context: ExecutionContext, refusal: RateLimitRefusal): void {
    const handler = context.getHandler();
    const handlerType = Reflect.getMetadata(PATTERN_HANDLER_METADATA, handler);
    const transportContext = context.getArgByIndex<object | undefined>(1);
    const transport = TRANSPORT_OF_CONTEXT[transportContext?.constructor.name ?? ''] ?? 'rpc';
    if (handlerType === MESSAGE_HANDLER) return this.acknowledgeAnswered(transport, transportContext as RmqContextLike);
    if (handlerType !== EVENT_HANDLER) return;
    // Nest's Kafka server awaits event handlers: the refusal reaches kafkajs as their error, which retries
    if (transport === 'kafka') return;
    const route = routeName(context.getClass(), handler);
    const policy = 'details' in refusal ? refusal.details.rule.name : route;
    const action = this.keep(transport, transportContext as RmqContextLike, route);
    if (this.metrics.enabled) this.metrics.deniedEvent(action, policy, transport);
    if (action !== 'dropped' || this.reported.has(handler)) return;
    this.reported.add(handler);
    const why =
      transport === 'rmq'
        ? 'its RabbitMQ consumer acknowledges on delivery (noAck: true); with noAck: false they are nacked instead (rmqDeniedEvents)'
        : `${transport === 'rpc' ? 'this transport' : transport} cannot keep an event once delivered`;
    this.logger.warn(`Events refused by the rate limit of ${route} are dropped: ${why}. They count in ratelimit.events.denied; this is logged once per handler.`);
  }

  /** Left unacknowledged, a refused request would hold its prefetch slot and be delivered again. */
  private acknowledgeAnswered(transport: string, context: RmqContextLike): void {
    if (transport !== 'rmq' || !this.servers.acknowledgesByHand(context.getChannelRef())) return;
    try {
      context.getChannelRef().ack(context.getMessage());
    } catch {
      // a closed channel: the broker redelivers the request, which is refused again
    }
  }

  /** Hands the event back to a broker that keeps it; 'dropped' where none can. */
  private keep(transport: string, context: RmqContextLike, route: string): DeniedEventAction {
    if (transport !== 'rmq' || !this.servers.acknowledgesByHand(context.getChannelRef())) return 'dropped';
    const requeue = this.config.rmqDeniedEvents === 'requeue';
    try {
      context.getChannelRef().nack(context.getMessage(), false, requeue);
    } catch (error) {
      // a closed channel: the broker redelivers what was never acknowledged
      this.logger.warn(`Could not nack an event refused by the rate limit of ${route}: ${(error as Error)?.message ?? String(error)}`);
    }
    return requeue ? 'requeued' : 'dead-lettered';
  }
}
