/**
 * Parsing of notification payloads: job ids ("12,15-19,40" or "at:<epoch ms>"),
 * "schedules" (the schedules table changed) and control messages (JSON).
 * Anyone who can connect may NOTIFY our channels, so payloads are untrusted:
 * anything malformed is reported as such, never thrown, and ranges are kept
 * as ranges so a hostile "1-9007199254740991" costs nothing to hold.
 */
export interface IdRange {
  first: number;
  last: number;
}

export type JobNotification =
  | { kind: 'ids'; ranges: IdRange[]; count: number }
  | { kind: 'due-at'; at: number }
  | { kind: 'schedules' }
  | { kind: 'malformed'; reason: string };

const MAX_PAYLOAD = 8_000;

/** What the jobs channel carries when the schedules table changed: a hint to re-read it, nothing more. */
export const SCHEDULES_CHANGED = 'schedules';
const ID = /^[1-9][0-9]{0,15}$/;

export function parseJobNotification(payload: string): JobNotification {
  if (typeof payload !== 'string' || payload.length === 0) return { kind: 'malformed', reason: 'empty payload' };
  if (payload.length > MAX_PAYLOAD) return { kind: 'malformed', reason: 'payload too long' };
  // Only a hint to re-read the table, so a forged one costs a read.
  if (payload === SCHEDULES_CHANGED) return { kind: 'schedules' };
  if (payload.startsWith('at:')) {
    const at = Number(payload.slice(3));
    return Number.isSafeInteger(at) && at > 0 ? { kind: 'due-at', at } : { kind: 'malformed', reason: 'bad due time' };
  }
  const ranges: IdRange[] = [];
  let count = 0;
  for (const token of payload.split(',')) {
    const dash = token.indexOf('-');
    const firstText = dash === -1 ? token : token.slice(0, dash);
    const lastText = dash === -1 ? token : token.slice(dash + 1);
    if (!ID.test(firstText) || !ID.test(lastText)) return { kind: 'malformed', reason: `bad id ${JSON.stringify(token.slice(0, 40))}` };
    const first = Number(firstText);
    const last = Number(lastText);
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last) || last < first) {
      return { kind: 'malformed', reason: `bad id range ${JSON.stringify(token.slice(0, 40))}` };
    }
    ranges.push({ first, last });
    count += last - first + 1;
  }
  return { kind: 'ids', ranges, count };
}

export function rangesContain(ranges: IdRange[], id: number): boolean {
  return ranges.some((r) => id >= r.first && id <= r.last);
}

/** At most `limit` ids from the ranges, in order, without expanding the rest. */
export function takeIds(ranges: IdRange[], limit: number): number[] {
  const out: number[] = [];
  for (const r of ranges) {
    for (let id = r.first; id <= r.last && out.length < limit; id++) out.push(id);
    if (out.length >= limit) break;
  }
  return out;
}

/**
 * How full PostgreSQL's NOTIFY queue (pg_notification_queue_usage(), 0-1) is
 * when grapevine stops sending notifications: notify() and notify_ids() in
 * src/schema/functions/ hold the same number.
 */
export const NOTIFY_DROP_USAGE = 0.5;

/**
 * A notification on the control channel: a cancel for one supervisor's
 * running job, or "look for messages" (for the supervisors named in `to`, or
 * everyone when it names none). As untrusted as the job channel's.
 */
export type ControlNotification =
  | { kind: 'cancel'; job: string; to: string | null }
  | { kind: 'message'; to: string[] | null }
  | { kind: 'malformed'; reason: string };

export function parseControlNotification(payload: string): ControlNotification {
  let message: { type?: unknown; job?: unknown; to?: unknown } | null;
  try {
    message = JSON.parse(payload);
  } catch {
    return { kind: 'malformed', reason: 'not JSON' };
  }
  if (message?.type === 'cancel' && typeof message.job === 'string') {
    return { kind: 'cancel', job: message.job, to: typeof message.to === 'string' ? message.to : null };
  }
  if (message?.type === 'message') {
    return { kind: 'message', to: Array.isArray(message.to) ? message.to.filter((t): t is string => typeof t === 'string') : null };
  }
  return { kind: 'malformed', reason: 'unknown message' };
}

/** Whether a control notification concerns supervisor `id`: a cancel names its owner, a message its recipients (or none: all). */
export function isAddressedTo(notification: ControlNotification, id: string): boolean {
  if (notification.kind === 'cancel') return notification.to === id;
  if (notification.kind === 'message') return notification.to === null || notification.to.includes(id);
  return false;
}
