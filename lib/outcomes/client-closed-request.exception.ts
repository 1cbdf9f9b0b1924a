import { HttpException } from '@nestjs/common';

/**
 * Thrown instead of running the handler of a request whose client left before the handler could
 * start (while a guard, a key resolver or the storage was answering): its work is never done, so
 * it counts as a failure, and it holds no concurrency slot. Nobody reads the answer: the
 * module's filter answers nothing. 499 is the status nginx logs for a client that closed early.
 */
export class ClientClosedRequestException extends HttpException {
  constructor() {
    super('Client Closed Request', 499);
  }
}
