/** A clock that moves only when told to. */
export class FakeClock {
  constructor(public time = Date.UTC(2026, 0, 1)) {}

  readonly now = (): number => this.time;

  advance(ms: number): void {
    this.time += ms;
  }
}
