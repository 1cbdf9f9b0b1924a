#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { errorText, REPORT_USAGE, runReportCommand } from './report-command.js';

/** Where the CLI writes, and what it may read of its environment: the process's, or a test's. */
export interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly env?: NodeJS.ProcessEnv;
  /** Whether stdout is a terminal: colours only then. False when absent, so tests get plain text. */
  readonly stdoutIsTTY?: boolean;
}

/**
 * One subcommand. `run` gets the arguments after the command's name and returns the exit code:
 * it reports its own usage errors (exit 2); a runtime failure is thrown, and printed here (exit 1).
 */
interface CliCommand {
  readonly summary: string;
  readonly usage: string;
  run(argv: readonly string[], io: CliIo): Promise<number>;
}

const COMMANDS: ReadonlyMap<string, CliCommand> = new Map([
  ['report', { summary: 'Print what the limit advisor learnt, and the limits it suggests.', usage: REPORT_USAGE, run: runReportCommand }],
]);

const COMMAND_LINES: readonly (readonly [string, string])[] = [
  ...[...COMMANDS].map(([name, command]) => [name, command.summary] as const),
  ['help <command>', 'The options of a command (also: <command> --help).'],
];

const USAGE = `Usage: nestjs-rate-limiting <command> [options]

Commands:
${COMMAND_LINES.map(([name, summary]) => `  ${name.padEnd(16)}${summary}`).join('\n')}`;

/** The CLI without the process: the exit code, 0 done, 1 failed at run time, 2 wrong command line. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    io.stderr(`nestjs-rate-limiting: no command given.\n\n${USAGE}\n`);
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    if (rest.length === 0) {
      io.stdout(`${USAGE}\n`);
      return 0;
    }
    const command = COMMANDS.get(rest[0]);
    if (command === undefined) return unknownCommand(rest[0], io);
    io.stdout(`${command.usage}\n`);
    return 0;
  }
  if (name.startsWith('-')) {
    io.stderr(`nestjs-rate-limiting: options come after a command, but ${printable(name)} came first.\n\n${USAGE}\n`);
    return 2;
  }
  const command = COMMANDS.get(name);
  if (command === undefined) return unknownCommand(name, io);
  try {
    return await command.run(rest, io);
  } catch (error) {
    io.stderr(`nestjs-rate-limiting ${name}: ${printable(errorText(error))}\n`);
    return 1;
  }
}

function unknownCommand(name: string, io: CliIo): number {
  io.stderr(`nestjs-rate-limiting: unknown command ${printable(JSON.stringify(name))}.\n\n${USAGE}\n`);
  return 2;
}

/** One line, no control characters: messages quote servers and Redis, whose text may be anything. */
function printable(text: string): string {
  return text.replace(/\s+/g, ' ').replace(/[\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu, '?').trim();
}

/**
 * Whether this module is the process's entry point. npm's bin is a symlink (and npx runs it
 * through one), so both sides are resolved to their real paths before they are compared.
 */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  // `... | head` closes the pipe early: that is the reader's choice, not an error to print a stack for.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => process.exit(error.code === 'EPIPE' ? 0 : 1));
  const exit = (code: number) =>
    // Once stdout and stderr are flushed (a pipe may be asynchronous), and without waiting for
    // whatever socket a failed connection left open.
    process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
  runCli(process.argv.slice(2), {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    env: process.env,
    stdoutIsTTY: process.stdout.isTTY === true,
  }).then(exit, (error: unknown) => {
    process.stderr.write(`nestjs-rate-limiting: ${String(error)}\n`);
    exit(1);
  });
}
