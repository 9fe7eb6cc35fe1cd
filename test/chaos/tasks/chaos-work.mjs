import { recordExecution } from 'grapevine-jobs/testing';

// Records the execution, then burns a little CPU so kills land mid-job.
export default async function chaosWork(payload, helpers) {
  await recordExecution(helpers);
  const until = Date.now() + (payload.ms ?? 1);
  let x = 0;
  while (Date.now() < until) x += Math.sqrt(x + 1);
  return { attempt: helpers.job.attempt };
}
