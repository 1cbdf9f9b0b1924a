import type { Client, ExecutionResult } from 'graphql-ws';
import { until } from './until.js';

/** What a client saw of one subscription: its events, its errors, and whether it completed. */
export interface Seen {
  readonly events: unknown[];
  readonly errors: { message: string; extensions?: Record<string, unknown> }[];
  completed: boolean;
  readonly unsubscribe: () => void;
}

export function subscribe(client: Client, query: string): Seen {
  const seen: Seen = {
    events: [],
    errors: [],
    completed: false,
    unsubscribe: client.subscribe<unknown>(
      { query },
      {
        next: (result: ExecutionResult<unknown>) => {
          if (result.errors) seen.errors.push(...(result.errors as unknown as Seen['errors']));
          if (result.data !== undefined && result.data !== null) seen.events.push(result.data);
        },
        // graphql-ws's `error` message carries the operation's GraphQL errors; anything else is the socket's
        error: (error: unknown) =>
          Array.isArray(error) ? seen.errors.push(...(error as Seen['errors'])) : seen.errors.push({ message: String((error as Error)?.message ?? error) }),
        complete: () => (seen.completed = true),
      },
    ),
  };
  return seen;
}

/** Subscribes and waits until the server answered: a first event, or a refusal. */
export async function answered(client: Client, query: string): Promise<Seen> {
  const seen = subscribe(client, query);
  await until(() => seen.events.length > 0 || seen.errors.length > 0 || seen.completed, `an answer to ${query}`);
  return seen;
}

/** The codes of the errors a subscription was refused with. */
export const refused = (seen: Seen) => seen.errors.map((error) => error.extensions?.code);
