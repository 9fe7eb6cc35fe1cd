/**
 * OpenTelemetry spans, one per job execution, when the application has
 * registered a tracer provider in the thread (its task modules, or a module
 * preloaded with --import, set one up); none otherwise. @opentelemetry/api is
 * an optional peer dependency: loaded once per thread if it is installed,
 * and without a registered provider a batch costs one lookup and its jobs
 * nothing (no span objects, not even the API's no-op ones).
 */
import type { Span, Tracer } from '@opentelemetry/api';
import type { ClaimedJobRow } from '../src/sql/jobs.ts';
import { VERSION } from '../src/version.ts';
import type { JobAbortSwitch } from './execute.ts';
import type { Outcome } from './outcomes.ts';

type Api = typeof import('@opentelemetry/api');

let api: Api | null = null;

/** Loads the API if the application has it; never fails. */
export const tracingLoaded: Promise<void> = import('@opentelemetry/api').then(
  (loaded) => {
    api = loaded;
  },
  () => {},
);

/** The registered provider's tracer, or null: the API is absent, or nothing was registered (its global is then a proxy with no delegate). */
export function activeTracer(): Tracer | null {
  if (!api) return null;
  const provider = api.trace.getTracerProvider() as { getDelegateTracer?: (name: string, version?: string) => Tracer | undefined };
  if (typeof provider.getDelegateTracer !== 'function') return api.trace.getTracer('grapevine-jobs', VERSION);
  return provider.getDelegateTracer('grapevine-jobs', VERSION) ?? null;
}

/**
 * Runs one execution inside its span: named `process <task>`, of kind
 * CONSUMER, with the messaging attributes and grapevine's own (task, queue,
 * job id, attempt, and the outcome once known). The handler runs in the
 * span's context, so spans it starts are its children where the application
 * registered a context manager.
 */
export async function traced(tracer: Tracer, job: ClaimedJobRow, abort: JobAbortSwitch, run: () => Promise<Outcome>): Promise<Outcome> {
  const otel = api!;
  const span = tracer.startSpan(`process ${job.task}`, {
    kind: otel.SpanKind.CONSUMER,
    attributes: {
      'messaging.system': 'grapevine',
      'messaging.operation.type': 'process',
      'messaging.destination.name': job.queue,
      'messaging.message.id': job.id,
      'grapevine.task': job.task,
      'grapevine.queue': job.queue,
      'grapevine.job.id': job.id,
      'grapevine.job.attempt': job.attempts,
    },
  });
  try {
    const outcome = await otel.context.with(otel.trace.setSpan(otel.context.active(), span), run);
    end(span, outcome, outcomeName(outcome, abort, job));
    return outcome;
  } catch (err) {
    // executeJob never throws; should it, the span still ends.
    span.end();
    throw err;
  }
}

/** What became of the execution, as the span's grapevine.job.outcome says it. */
export function outcomeName(outcome: Outcome, abort: JobAbortSwitch, job: ClaimedJobRow): string {
  if (outcome.kind !== 'failure') return 'succeeded';
  if (abort.reason?.kind === 'cancelled') return 'cancelled';
  if (abort.reason?.kind === 'timeout') return 'timeout';
  if (abort.reason?.kind === 'shutdown') return 'shutdown';
  return outcome.retryable && job.attempts < job.max_attempts ? 'retry' : 'failed';
}

function end(span: Span, outcome: Outcome, name: string): void {
  span.setAttribute('grapevine.job.outcome', name);
  if (outcome.kind === 'failure') {
    // The first line: the stored error's stack stays in the job's row.
    span.setStatus({ code: api!.SpanStatusCode.ERROR, message: outcome.error.split('\n', 1)[0] });
  }
  span.end();
}
