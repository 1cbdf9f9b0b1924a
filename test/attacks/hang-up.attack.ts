import 'reflect-metadata';
import { Controller, HttpCode, Param, Post, Res, type ExecutionContext } from '@nestjs/common';
import { ConcurrencyLimit, RateLimit } from '../../lib/index.js';
import { HTTP_PLATFORMS } from '../support/scenario-app.js';
import { attackRun, clearOfBoundary, deploy, rawResponse, send, sleep, until, type Answer, type Row } from './support.js';

/**
 * Attacks 1 and 2 of issue 19, with real timing: clients that hang up.
 *
 * 1. `count: 'successes'` signups, 10 an hour; the handler works ~100 ms, then creates the
 *    account. 50 signups, each on its own connection, each socket destroyed 60 ms (then 5 ms)
 *    after it was sent. The previous release refunded a success whose client had gone as a
 *    failure: 50 accounts.
 * 2. `@ConcurrencyLimit(2)`, a handler that works 1.5 s; 20 requests, each aborted 50 ms after it
 *    was sent: all at once, and one every 50 ms (each sent as the one before is aborted). The
 *    previous release freed the slot at the hang-up: 20 handlers at once.
 */

// ---- the attacked app: public API only ----

/** What the app did, across its instances (both live in this process). */
const app = {
  accounts: [] as { id: string; clientGoneAtStart: boolean }[],
  signupsStarted: 0,
  signupsStartedAfterHangUp: 0,
  running: 0,
  mostRunning: 0,
  exportsStarted: 0,
};

const byClient = (context: ExecutionContext) => `client:${String(context.switchToHttp().getRequest().headers['x-client'])}`;

@Controller()
class SignupController {
  @Post('signup/:id')
  @HttpCode(201)
  @RateLimit('10/hour', { key: byClient, count: 'successes' })
  async signup(@Param('id') id: string, @Res({ passthrough: true }) response: unknown) {
    app.signupsStarted++;
    const clientGoneAtStart = rawResponse(response).closed; // the library must not run it then
    if (clientGoneAtStart) app.signupsStartedAfterHangUp++;
    await sleep(100); // checks, hashing, the insert...
    app.accounts.push({ id, clientGoneAtStart });
    return { account: id };
  }
}

@Controller()
class ExportController {
  @Post('export/:id')
  @ConcurrencyLimit(2, { key: byClient })
  async export(@Param('id') id: string) {
    app.exportsStarted++;
    app.running++;
    app.mostRunning = Math.max(app.mostRunning, app.running);
    try {
      await sleep(1_500); // the export's work goes on whether the client waits or not
      return { id };
    } finally {
      app.running--;
    }
  }
}

// ---- the harness ----

const run = attackRun(import.meta.url);
const { rows } = run;

const tally = (answers: readonly Answer[]) => {
  const counts: Record<string, number> = {};
  for (const { status } of answers) counts[String(status)] = (counts[String(status)] ?? 0) + 1;
  return Object.entries(counts)
    .map(([status, n]) => `${n}×${status}`)
    .join(', ');
};

describe.each(HTTP_PLATFORMS)('hang-ups on %s', (platform) => {
  describe.each(['memory', 'redis'] as const)('%s', (storage) => {
    it.each([60, 5, 1])("1. 50 signups, each socket destroyed %i ms after sending, create at most 10 accounts (count: 'successes', 10/hour)", async (destroyAfterMs) => {
      await run.redis.flush();
      Object.assign(app, { accounts: [], signupsStarted: 0, signupsStartedAfterHangUp: 0 });
      await clearOfBoundary(3_600_000, 30_000);
      const deployment = await deploy([SignupController], storage, run.redis, { platform });
      const answers: Answer[] = [];
      try {
        for (let i = 0; i < 50; i++) {
          const { answer } = send(deployment.pick(i).port, `/signup/s${i}`, { method: 'POST', headers: { 'x-client': 'mallory' }, destroyAfterMs });
          answers.push(await answer);
        }
        await sleep(150); // the last handlers finish their 100 ms
        await until(() => app.accounts.length === app.signupsStarted, 'every signup handler has ended', 5_000);
      } finally {
        await deployment.close();
      }
      const created = app.accounts.length;
      const afterGone = app.accounts.filter((a) => a.clientGoneAtStart).length;
      const hungUp = answers.filter((a) => a.status === 'hung up').length;
      // hung-up requests that got no handler: gone before it started (nothing done, the unit given back), or denied unread
      const noHandler = hungUp - app.signupsStarted;
      rows.push({
        attack: `1. signups, socket destroyed after ${destroyAfterMs} ms`,
        storage: deployment.label,
        trials: '50 signups',
        measured: "accounts created (count: 'successes', 10/hour); handlers run for a client already gone",
        observed: `${created} accounts; ${afterGone} after hang-up; ${noHandler} hung up with no handler run (client saw ${tally(answers)})`,
        bound: '≤ 10 accounts; 0 after hang-up [was 50]',
        held: created <= 10 && afterGone === 0 && app.signupsStartedAfterHangUp === 0,
      });
      expect(created).toBeLessThanOrEqual(10);
      expect(app.signupsStartedAfterHangUp).toBe(0);
      expect(afterGone).toBe(0);
      // the attack was real: no answer came before the hang-up for the admitted ones
      expect(hungUp).toBeGreaterThanOrEqual(created);
    }, 30_000);

    it.each([
      ['at once', 1],
      ['one every 50 ms', 2],
    ] as const)('2. 20 requests %s, each aborted 50 ms after it was sent, never run more than 2 handlers of @ConcurrencyLimit(2) at once (1.5 s of work)', async (pace, ROUNDS) => {
      await run.redis.flush();
      Object.assign(app, { running: 0, mostRunning: 0, exportsStarted: 0 });
      const deployment = await deploy([ExportController], storage, run.redis, { platform });
      const perRound: number[] = [];
      const answers: Answer[] = [];
      try {
        for (let round = 0; round < ROUNDS; round++) {
          const startedBefore = app.exportsStarted;
          const attempts: Promise<Answer>[] = [];
          for (let i = 0; i < 20; i++) {
            // one every 50 ms: each sent as the one before is aborted, all 20 within 1 s, less than one handler's work
            if (pace === 'one every 50 ms' && i > 0) await sleep(50);
            const path = `/export/r${round}-${i}`;
            attempts.push(send(deployment.pick(i).port, path, { method: 'POST', headers: { 'x-client': 'eve' }, destroyAfterMs: 50 }).answer);
          }
          answers.push(...(await Promise.all(attempts)));
          await until(() => app.running === 0, 'every export handler has ended', 10_000);
          perRound.push(app.exportsStarted - startedBefore);
          await sleep(100); // the slots' releases land
        }
      } finally {
        await deployment.close();
      }
      rows.push({
        attack: `2. @ConcurrencyLimit(2), 20 requests ${pace}, each aborted after 50 ms`,
        storage: deployment.label,
        trials: `${ROUNDS} round${ROUNDS > 1 ? 's' : ''} × 20 requests`,
        measured: 'most handlers running at once (1.5 s of work each)',
        observed: `${app.mostRunning} (started per round: ${perRound.join(', ')}; client saw ${tally(answers)})`,
        bound: '≤ 2 [was 20]',
        held: app.mostRunning <= 2,
      });
      expect(app.mostRunning).toBeLessThanOrEqual(2);
      expect(app.mostRunning).toBeGreaterThanOrEqual(1); // the attack reached the handler
    }, 30_000);
  });
});
