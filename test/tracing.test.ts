import path from 'node:path';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Supervisor } from '../supervisor/public.ts';
import { activeTracer, tracingLoaded } from '../threads/tracing.ts';
import { startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

/**
 * OpenTelemetry: a span per job execution in the thread, when the
 * application registered a tracer provider there (the fixture's task module
 * does, with the SDK's in-memory exporter), and none without one.
 */
const db = useMigratedSchema('tracing');
const TRACED_TASKS = path.resolve(import.meta.dirname, 'fixtures/traced-tasks.mjs');
let sup: Supervisor;

beforeAll(async () => {
  sup = await startTestSupervisor(db, { tasks: TRACED_TASKS, threads: 1, retryBaseMs: 10, retryMaxMs: 20 });
});
afterAll(() => sup?.stop({ graceMs: 0 }));

interface ExportedSpan {
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  status: { code: number; message?: string };
}

describe('with a tracer provider registered in the thread', () => {
  it('records one span per execution, with task, queue, job id, attempt and outcome', async () => {
    const ok = await db.client.addJob('work', {}, { queue: 'mail' });
    const flaky = await db.client.addJob('work', { failUntil: 1 }, { maxAttempts: 3 });
    const failed = await db.client.addJob('work', { failUntil: 9 }, { maxAttempts: 1 });
    for (const id of [ok, flaky, failed]) await db.client.waitForJob(id);
    // One thread: the exporter that ran the jobs is the one this job reads.
    const report = await db.client.waitForJob(await db.client.addJob('spans', {}));
    const spans = (report.result as ExportedSpan[]).filter((s) => s.name === 'process work');
    const of = (id: string) => spans.filter((s) => s.attributes['grapevine.job.id'] === id);

    expect(of(ok)).toEqual([
      {
        name: 'process work',
        kind: SpanKind.CONSUMER,
        attributes: {
          'messaging.system': 'grapevine',
          'messaging.operation.type': 'process',
          'messaging.destination.name': 'mail',
          'messaging.message.id': ok,
          'grapevine.task': 'work',
          'grapevine.queue': 'mail',
          'grapevine.job.id': ok,
          'grapevine.job.attempt': 1,
          'grapevine.job.outcome': 'succeeded',
        },
        status: { code: SpanStatusCode.UNSET },
      },
    ]);
    expect(of(flaky).map((s) => [s.attributes['grapevine.job.attempt'], s.attributes['grapevine.job.outcome'], s.status.code])).toEqual([
      [1, 'retry', SpanStatusCode.ERROR],
      [2, 'succeeded', SpanStatusCode.UNSET],
    ]);
    expect(of(flaky)[0].status.message).toMatch(/attempt 1 failed on purpose/);
    expect(of(failed).map((s) => s.attributes['grapevine.job.outcome'])).toEqual(['failed']);
  });
});

describe('without one', () => {
  it('has no tracer: the API alone makes no spans, and a registered provider is found', async () => {
    await tracingLoaded;
    // This test process registered nothing: no spans, not even no-op ones.
    expect(activeTracer()).toBeNull();
    const provider = new BasicTracerProvider();
    trace.setGlobalTracerProvider(provider);
    try {
      expect(activeTracer()).not.toBeNull();
    } finally {
      trace.disable();
      await provider.shutdown();
    }
    expect(activeTracer()).toBeNull();
  });
});
