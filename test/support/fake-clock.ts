/**
 * A clock that moves only when told to. It starts years ahead of real time: Redis expires keys
 * by its own clock at the absolute times the scripts compute, so a fake clock must never run
 * behind the server's.
 */
export class FakeClock {
  constructor(public time = Date.UTC(2030, 0, 1)) {}

  readonly now = (): number => this.time;

  advance(ms: number): void {
    this.time += ms;
  }
}
