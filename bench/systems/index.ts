// Adapter factory. Each adapter is imported only when used, so a trial process loads
// one library, and grapevine's adapter (which loads ../src) cannot break the others.
import { ALL_PROFILES, type AdapterContext, type Profile, type SystemAdapter, type SystemName } from './types.ts';

export async function createAdapter(name: SystemName, ctx: AdapterContext): Promise<SystemAdapter> {
  switch (name) {
    case 'graphile':
      return new (await import('./graphile.ts')).GraphileAdapter(ctx);
    case 'pgboss':
      return new (await import('./pgboss.ts')).PgBossAdapter(ctx);
    case 'bullmq':
      return new (await import('./bullmq.ts')).BullMqAdapter(ctx);
    case 'grapevine':
      return new (await import('./grapevine.ts')).GrapevineAdapter(ctx);
  }
}

/** Each system's settings in every profile, for BENCHMARKS.md, without touching a database. */
export async function describeSettings(name: SystemName, threads: number): Promise<Map<Profile, Record<string, string>>> {
  const out = new Map<Profile, Record<string, string>>();
  for (const profile of ALL_PROFILES) {
    const adapter = await createAdapter(name, { connectionString: 'postgres://127.0.0.1:1/none', schema: 'none', profile });
    out.set(profile, adapter.settings({ threads }));
    await adapter.close().catch(() => undefined);
  }
  return out;
}
