import { Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, ModulesContainer } from '@nestjs/core';
import type { Subscription } from 'rxjs';
import { RoutePlanner } from '../rules/route-planner.js';

/** Nest's metadata keys (the same since Nest 6). */
const PATTERN_METADATA = 'microservices:pattern';
const TRANSPORT_METADATA = 'microservices:transport'; // @MessagePattern('x', Transport.NATS)

/** Nest's `Transport` enum, by value (stable since Nest 6). */
const TRANSPORTS: Readonly<Record<number, string>> = { 0: 'TCP', 1: 'Redis', 2: 'NATS', 3: 'MQTT', 4: 'gRPC', 5: 'RabbitMQ', 6: 'Kafka' };
/** The transports whose messages tell who sent them: a TCP socket's address, a gRPC call's peer. */
const ADDRESSED = new Set([0, 4]);
const RMQ = 5;

/** The parts of Nest's servers read here (ServerRMQ keeps `noAck` and its channel wrapper). */
interface MessageServer {
  readonly transportId?: unknown;
  readonly noAck?: boolean;
  /** amqp-connection-manager's ChannelWrapper, which holds the amqplib channel as `_channel`. */
  readonly channel?: { readonly _channel?: unknown };
}

/**
 * The app's microservice servers, as Nest registers them (`ModulesContainer.getRpcTargetRegistry`),
 * for what only a server knows:
 * - at start-up, a limited message handler served by a broker transport, whose messages carry no
 *   sender's address, must name a `key`: the app does not start otherwise, rather than fail every
 *   message later;
 * - whether a RabbitMQ consumer acknowledges by hand (`noAck: false`), which decides whether a
 *   refused event may be nacked.
 */
@Injectable()
export class MessageServers implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly servers = new Set<MessageServer>();
  private readonly subscription?: Subscription;

  constructor(
    modules: ModulesContainer,
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly planner: RoutePlanner,
  ) {
    // a replaying registry: servers created before and after this provider alike (hybrid apps)
    this.subscription = modules.getRpcTargetRegistry?.<MessageServer>().subscribe((server) => this.servers.add(server));
  }

  /** Runs for the app and again for each microservice it starts: each time with the servers known then. */
  onApplicationBootstrap(): void {
    const unidentified: string[] = [];
    for (const { metatype } of this.discovery.getControllers()) {
      if (typeof metatype !== 'function') continue;
      for (const name of this.scanner.getAllMethodNames(metatype.prototype)) {
        const handler = (metatype.prototype as Record<string, unknown>)[name];
        if (typeof handler !== 'function' || !Reflect.hasMetadata(PATTERN_METADATA, handler)) continue;
        const blind = this.unaddressedTransports(Reflect.getMetadata(TRANSPORT_METADATA, handler));
        if (blind.length > 0 && this.planner.fallsBackToAddress(metatype as never, handler)) {
          unidentified.push(`${metatype.name}.${name} (on ${blind.join(', ')})`);
        }
      }
    }
    if (unidentified.length === 0) return;
    throw new Error(
      `RateLimitModule: ${unidentified.join('; ')} ${unidentified.length === 1 ? 'is' : 'are'} limited by client address, ` +
        'but a broker transport does not say who sent a message. Give @RateLimit (and @ConcurrencyLimit, or the module) a `key` ' +
        'that identifies the sender, e.g. { key: (ctx) => ctx.switchToRpc().getData().clientId }, or a header of the transport.',
    );
  }

  /** Whether the RabbitMQ consumer delivering on `channel` acknowledges by hand; false when unknown. */
  acknowledgesByHand(channel: unknown): boolean {
    const rmq = [...this.servers].filter((server) => server.transportId === RMQ);
    const delivering = rmq.find((server) => server.channel?._channel === channel);
    if (delivering !== undefined) return delivering.noAck === false;
    // a nack on a channel that acknowledged on delivery closes it: only when every consumer is manual
    return rmq.length > 0 && rmq.every((server) => server.noAck === false);
  }

  onModuleDestroy(): void {
    this.subscription?.unsubscribe();
  }

  /** The known transports that would serve a handler bound to `transport` and carry no address. */
  private unaddressedTransports(transport: unknown): string[] {
    const names = new Set<string>();
    for (const { transportId } of this.servers) {
      if (typeof transportId !== 'number' || ADDRESSED.has(transportId) || TRANSPORTS[transportId] === undefined) continue;
      if (transport === undefined || transport === transportId) names.add(TRANSPORTS[transportId]);
    }
    return [...names];
  }
}
