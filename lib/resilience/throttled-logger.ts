import { Logger } from '@nestjs/common';

/** Warns at most once per interval, counting what it held back, so an outage cannot flood logs. */
export class ThrottledLogger {
  private readonly logger: Logger;
  private nextAt = 0;
  private suppressed = 0;

  constructor(context: string, private readonly intervalMs = 10_000) {
    this.logger = new Logger(context);
  }

  /** A function for the message is called only when the warning is written: nothing is built for one held back. */
  warn(message: string | (() => string)): void {
    const now = Date.now();
    if (now < this.nextAt) {
      this.suppressed++;
      return;
    }
    const held = this.suppressed ? ` (${this.suppressed} similar warnings suppressed)` : '';
    this.logger.warn((typeof message === 'function' ? message() : message) + held);
    this.suppressed = 0;
    this.nextAt = now + this.intervalMs;
  }
}
