import { describe, expect, it } from 'vitest';
import { ConnectionBudget, connectionsWith, MIN_CONNECTIONS, splitBudget } from '../../src/connection-budget.ts';

/** Two views of one budget, as two threads see it, each with its slot. */
function threadsOf(budget: ConnectionBudget, ...ids: number[]): ConnectionBudget[] {
  return ids.map((id) => {
    const view = ConnectionBudget.attach(budget.buffer);
    view.claimSlot(id);
    return view;
  });
}

describe('splitBudget', () => {
  it('keeps 2 for the supervisor (1 under 4), gives the threads the rest and their handlers all of it but one', () => {
    expect(splitBudget(8)).toEqual({ supervisor: 2, threads: 6, handlers: 5 });
    expect(splitBudget(4)).toEqual({ supervisor: 2, threads: 2, handlers: 1 });
    // The smallest budget: handlers never hold the threads' last connection.
    expect(splitBudget(MIN_CONNECTIONS)).toEqual({ supervisor: 1, threads: 2, handlers: 1 });
  });

  it('bounds what a SCALE lets the supervisor open by the budget', () => {
    expect(connectionsWith(splitBudget(8), 1, 3)).toBe(2 + 3);
    expect(connectionsWith(splitBudget(8), 64, 3)).toBe(8);
  });
});

describe('ConnectionBudget', () => {
  it('counts connections of all threads against one limit, and a connection over it waits for one to end', async () => {
    const budget = ConnectionBudget.create(2, 1, 2);
    const [a, b] = threadsOf(budget, 101, 102);
    const giveA = await a.acquire('system');
    await b.acquire('system');
    expect(budget.inUse()).toBe(2);
    let third = false;
    const waiting = a.acquire('system').then((give) => {
      third = true;
      return give;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(third).toBe(false);
    expect(budget.waiting()).toBe(1);
    giveA();
    giveA(); // given back once, however often called
    await waiting;
    expect(budget.inUse()).toBe(2);
    expect(budget.waiting()).toBe(0);
  });

  it('caps the handlers below the limit, so a claim always finds a connection', async () => {
    const budget = ConnectionBudget.create(3, 2, 1);
    const [t] = threadsOf(budget, 201);
    await t.acquire('handler');
    await t.acquire('handler');
    let handler = false;
    void t.acquire('handler').then(() => {
      handler = true;
    });
    await t.acquire('system');
    expect(budget.inUse()).toBe(3);
    expect(budget.handlersInUse()).toBe(2);
    expect(handler).toBe(false);
  });

  it('takes back what a thread that ended held and waited for, and says when a thread waits', async () => {
    const budget = ConnectionBudget.create(2, 1, 2);
    const [gone, other] = threadsOf(budget, 301, 302);
    await gone.acquire('system');
    await gone.acquire('handler');
    let demands = 0;
    const stop = other.onDemand(() => demands++);
    void gone.acquire('system');
    expect(budget.waiting()).toBe(1);
    await new Promise((r) => setTimeout(r, 20));
    expect(demands).toBeGreaterThan(0);
    stop();
    budget.reclaim(301);
    expect({ inUse: budget.inUse(), handlers: budget.handlersInUse(), waiting: budget.waiting() }).toEqual({
      inUse: 0,
      handlers: 0,
      waiting: 0,
    });
    // The slot is free for the next thread.
    threadsOf(budget, 303);
  });

  it('gives each thread an even share, none when the threads outnumber the connections', () => {
    const budget = ConnectionBudget.create(6, 5, 4);
    expect(budget.fairShare()).toBe(1);
    budget.setThreads(2);
    expect(budget.fairShare()).toBe(3);
    budget.setThreads(8);
    expect(budget.fairShare()).toBe(0);
  });
});
