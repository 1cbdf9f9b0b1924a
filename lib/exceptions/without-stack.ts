/**
 * Runs `create` with stack capture off. A rate-limit answer is control flow, not a fault: its
 * stack would never be read, and capturing one through Nest's call chain costs more than the
 * rest of the rejection.
 */
export function withoutStack<T>(create: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return create();
  } finally {
    Error.stackTraceLimit = limit;
  }
}
