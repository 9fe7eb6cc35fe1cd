import { quoteIdent } from '../channels.ts';

export const version = 3;
export const name = 'claim_plans';

/**
 * The claims of migration 0001 joined the picked ids back to the table. Once
 * the statistics knew the table, the planner hashed that join, which reads
 * every row of the table on every claim: a drain of 20,000 jobs spent three
 * quarters of each claim in that scan. Here the picked ids go into an array
 * first, so the update is always a primary-key lookup per claimed row.
 *
 * A claim also draws one token for all of its rows instead of one per row:
 * outcomes are fenced on (id, token), which a statement-wide token keeps unique.
 */
export function sql(schema: string): string {
  const s = quoteIdent(schema);
  return `
${claimFunction(s, 'claim_next', 'n integer', `
     WHERE state = 'pending' AND run_at <= now()
       AND task = ANY($2) AND ($3 IS NULL OR queue = ANY($3))
     ORDER BY priority DESC, run_at, id
     LIMIT $1
     FOR UPDATE SKIP LOCKED`, 'SET enable_bitmapscan = off SET enable_sort = off')}

${claimFunction(s, 'claim_ids', 'ids bigint[]', `
     WHERE id = ANY($1) AND state = 'pending' AND run_at <= now()
       AND task = ANY($2) AND ($3 IS NULL OR queue = ANY($3))
     ORDER BY id
     FOR UPDATE`, "SET lock_timeout = '500ms'")}
`;
}

function claimFunction(s: string, name: string, first: string, pick: string, settings: string): string {
  return `CREATE OR REPLACE FUNCTION ${s}.${name}(${first}, task_names text[], queue_names text[], owner text, thread integer, lease_ms integer)
RETURNS TABLE (id bigint, task text, queue text, payload jsonb, attempts integer, max_attempts integer,
               timeout_ms integer, claim_token bigint, cancel_requested boolean)
LANGUAGE sql
${settings}
AS $fn$
  UPDATE ${s}.jobs j
     SET state = 'running', attempts = j.attempts + 1, locked_by = $4, locked_thread = $5,
         claim_token = (SELECT nextval('${s}.claim_tokens')), lease_until = now() + $6 * interval '1 millisecond',
         started_at = now(), finished_at = NULL
   WHERE j.id = ANY(ARRAY(SELECT id FROM ${s}.jobs${pick}))
  RETURNING j.id, j.task, j.queue, j.payload, j.attempts, j.max_attempts, j.timeout_ms, j.claim_token,
            j.cancel_requested_at IS NOT NULL
$fn$;`;
}
