import 'reflect-metadata';
import { Injectable } from '@nestjs/common';
import { AuthController } from '../../sample-app/auth/auth.controller.js';
import type { User } from '../../sample-app/users/user.interface.js';
import { UsersService } from '../../sample-app/users/users.service.js';
import { HTTP_PLATFORMS } from '../support/scenario-app.js';
import { attackRun, clearOfBoundary, deploy, send, type Answer, type Row } from './support.js';

/**
 * Attack 7 of issue 19, with real timing: brute force by an attacker who owns an account.
 *
 * The sample app's `POST /auth/login` (sample-app/auth/auth.controller.ts: the README's and
 * docs/control.md's recipe, written with the public API), booted as it is, on a user store with
 * two accounts: the attacker's, mallory, and the victim's, alice. From one IP, 10 cycles of 4
 * wrong guesses at alice and a good login as mallory. The previous recipe (one counter per IP,
 * reset by any successful login) let all 40 guesses reach the password check.
 */

// ---- the attacked app's user store (the sample app's AuthController calls login() only) ----

const ACCOUNTS = [
  { username: 'mallory', password: 'mallory-knows-this', token: 'mallory-token', user: { id: 'u-mallory', name: 'Mallory', plan: 'free' } },
  { username: 'alice', password: 'correct horse battery staple', token: 'alice-token', user: { id: 'u-alice', name: 'Alice', plan: 'paid' } },
] as const satisfies readonly { username: string; password: string; token: string; user: User }[];

/** Wrong passwords for alice that reached the password check, across every instance. */
let aliceGuessesChecked = 0;

@Injectable()
class AttackedUsers {
  login(username: unknown, password: unknown): { token: string; user: User } | undefined {
    const account = ACCOUNTS.find((a) => a.username === username);
    const ok = account !== undefined && account.password === password;
    if (username === 'alice' && !ok) aliceGuessesChecked++;
    return ok ? { token: account.token, user: account.user } : undefined;
  }
}

// ---- the harness ----

const run = attackRun(import.meta.url);
const { rows } = run;

const CYCLES = 10;

describe.each(HTTP_PLATFORMS)('brute force by an attacker with an account of their own, on %s', (platform) => {
  describe.each(['memory', 'redis'] as const)('%s', (storage) => {
    it(`7. 10 cycles of (4 wrong guesses at alice, 1 good login as mallory) from one IP: at most 5 guesses reach the password check`, async () => {
      await run.redis.flush();
      aliceGuessesChecked = 0;
      await clearOfBoundary(60_000, 10_000); // the per-account limit is 5 a minute: all in one minute
      await clearOfBoundary(3_600_000, 10_000); // the per-IP limit, 20 an hour
      const deployment = await deploy([AuthController], storage, run.redis, { platform, providers: [{ provide: UsersService, useClass: AttackedUsers }] });
      let sent = 0;
      const login = (username: string, password: string): Promise<Answer> =>
        send(deployment.pick(sent++).port, '/auth/login', { body: { username, password } }).answer;
      const atAlice: Answer[] = [];
      const asMallory: Answer[] = [];
      try {
        for (let cycle = 0; cycle < CYCLES; cycle++) {
          for (let i = 0; i < 4; i++) atAlice.push(await login('alice', `guess-${cycle}-${i}`));
          asMallory.push(await login('mallory', 'mallory-knows-this'));
        }
      } finally {
        await deployment.close();
      }
      const answered401 = atAlice.filter((a) => a.status === 401).length;
      const policies = tally(atAlice);
      rows.push({
        attack: '7. brute force: 10 × (4 wrong at alice + 1 good login as mallory), one IP (sample app recipe)',
        storage: deployment.label,
        trials: `${CYCLES * 4} guesses`,
        measured: 'wrong guesses at alice that reached the password check',
        observed: `${aliceGuessesChecked} (alice's answers: ${policies}; mallory: ${tally(asMallory)})`,
        bound: '≤ 5 [was 40]',
        held: aliceGuessesChecked <= 5,
      });
      expect(aliceGuessesChecked).toBeLessThanOrEqual(5);
      expect(answered401).toBe(aliceGuessesChecked); // a guess checked is a 401, and only those
      expect(atAlice.every((a) => a.status === 401 || a.status === 429)).toBe(true);
    }, 30_000);
  });
});

/** `5×401, 15×429 login, ...`: a 429 with the policy that refused it. */
function tally(answers: readonly Answer[]): string {
  const counts: Record<string, number> = {};
  for (const answer of answers) {
    const policy = answer.status === 429 ? ` ${/^"([^"]+)"/.exec(String(answer.headers['ratelimit-policy']))?.[1] ?? '?'}` : '';
    const key = `${answer.status}${policy}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return Object.entries(counts)
    .map(([key, n]) => `${n}×${key}`)
    .join(', ');
}
