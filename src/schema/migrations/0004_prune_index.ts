import { quoteIdent } from '../channels.ts';

export const version = 4;
export const name = 'prune_index';

/**
 * Pruning finished jobs read the whole table once a minute: with a million
 * pending rows that was ~0.4 s of database CPU, spent while every thread was
 * claiming. A BRIN index on finished_at lets the prune visit only the page
 * ranges that hold old finished rows. It costs almost nothing per job: rows
 * are finished in table order (each outcome write puts the new row version at
 * the end of the heap), so each range's summary stays narrow, and ranges not
 * yet summarised are only noted, to be summarised in the background.
 */
export function sql(schema: string): string {
  const s = quoteIdent(schema);
  return `
CREATE INDEX jobs_finished_brin ON ${s}.jobs USING brin (finished_at) WITH (autosummarize = on);
`;
}
