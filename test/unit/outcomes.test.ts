import { describe, expect, it } from 'vitest';
import { oncePerJob, retryFirst } from '../../threads/outcomes.ts';

const p = (id: string, token: string, settled?: boolean) => ({ outcome: { id, token }, settled });

describe('oncePerJob', () => {
  it("sends each job's first outcome to the delete and leaves later ones (stale claims) to the fenced complete", () => {
    const items = [p('1', 'a'), p('2', 'b'), p('1', 'c'), p('3', 'd'), p('1', 'e')];
    const { once, repeats } = oncePerJob(items);
    expect(once.map((x) => x.outcome.token)).toEqual(['a', 'b', 'd']);
    expect(repeats.map((x) => x.outcome.token)).toEqual(['c', 'e']);
  });

  it('keeps every item, each exactly once, and the same objects', () => {
    const items = Array.from({ length: 50 }, (_, i) => p(String(i % 7), String(i)));
    const { once, repeats } = oncePerJob(items);
    expect(once).toHaveLength(7);
    expect(new Set(once.map((x) => x.outcome.id)).size).toBe(7);
    expect([...once, ...repeats].sort((x, y) => Number(x.outcome.token) - Number(y.outcome.token))).toEqual(items);
    expect(once[0]).toBe(items[0]);
  });

  it('has nothing to split in an empty batch', () => {
    expect(oncePerJob([])).toEqual({ once: [], repeats: [] });
  });
});

describe('retryFirst', () => {
  it("puts a failed write's unsettled outcomes back ahead of those that queued up meanwhile, dropping settled ones", () => {
    const failed = [p('1', 'a'), p('2', 'b', true), p('3', 'c', false)];
    const queued = [p('4', 'd')];
    expect(retryFirst(failed, queued).map((x) => x.outcome.id)).toEqual(['1', '3', '4']);
  });

  it('leaves the queue as it was when everything failed had been settled', () => {
    const queued = [p('4', 'd'), p('5', 'e')];
    expect(retryFirst([p('1', 'a', true)], queued)).toEqual(queued);
  });
});
