import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

/** A real pino logger whose lines the test can read back. */
export function capturingLogger(level = 'debug'): { logger: Logger; lines: () => Array<Record<string, any>>; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  const logger = pino({ level }, stream);
  return {
    logger,
    text: () => chunks.join(''),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
  };
}
