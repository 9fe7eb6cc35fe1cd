import { types } from 'node:util';

/** A NUL, or a UTF-16 surrogate of a pair that is not there: what PostgreSQL's text, json and jsonb refuse. */
const UNSTORABLE = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
/** A quick look first: most text has no NUL and no surrogate at all. */
const MAYBE_UNSTORABLE = /[\0\ud800-\udfff]/;

/**
 * Text from a handler or a message made safe to store and to log: NUL
 * characters and lone UTF-16 surrogates, which PostgreSQL refuses in text and
 * JSON, become U+FFFD (the replacement character), and text longer than
 * `maxChars` UTF-16 units is cut to at most that many, ending in '…'. The cut
 * never falls between the two halves of a surrogate pair (an emoji), which
 * would leave a lone surrogate behind.
 */
export function storableText(text: string, maxChars: number): string {
  let kept = text;
  if (kept.length > maxChars) {
    if (maxChars < 1) return '';
    let end = maxChars - 1;
    if (end > 0 && isHighSurrogate(kept.charCodeAt(end - 1))) end--;
    kept = `${kept.slice(0, end)}…`;
  }
  return MAYBE_UNSTORABLE.test(kept) ? kept.replace(UNSTORABLE, '\ufffd') : kept;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/**
 * JSON escapes as JSON.stringify writes them. Group 1: \u0000 (jsonb cannot
 * hold NUL); group 2: a surrogate escape not part of an escaped pair (lone
 * surrogates are escaped, whole pairs written as they are, except by a
 * JSON.rawJSON). Matched left to right, so "\\u0000" (a backslash, then
 * the text u0000) is not taken for one.
 */
const JSON_ESCAPE = /\\(?:u(?:(0000)|d[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|(d[89a-f][0-9a-f]{2})|[0-9a-f]{4})|.)/gi;

/**
 * What in JSON text (as JSON.stringify writes it) jsonb would refuse: a NUL
 * character, or a lone surrogate (its escape, lowercase, without the \u);
 * null if there is neither.
 */
export function unstorableInJson(json: string): { nul: true } | { surrogate: string } | null {
  if (!json.includes('\\u')) return null;
  for (const m of json.matchAll(JSON_ESCAPE)) {
    if (m[1] !== undefined) return { nul: true };
    if (m[2] !== undefined) return { surrogate: m[2].toLowerCase() };
  }
  return null;
}

/** How to turn what lostInJson finds into JSON, for the error that names it. */
export const LOST_IN_JSON_FIX = 'convert it first, e.g. Object.fromEntries(map) or [...set]';

/**
 * The first Map, Set, WeakMap or WeakSet in `value`, as "Map" or
 * 'Set (at "key")', or null: JSON.stringify turns them into {} without a
 * word, losing what they hold. `json` is the value's JSON already made: with
 * no {} in it nothing was lost, so the common case walks nothing again. One
 * with a toJSON of its own is fine (the replacer sees what toJSON returns).
 */
export function lostInJson(value: unknown, json: string): string | null {
  if (!json.includes('{}')) return null;
  let found: string | null = null;
  try {
    JSON.stringify(value, (key, v: unknown) => {
      if (found === null && typeof v === 'object' && v !== null) {
        const kind = types.isMap(v)
          ? 'Map'
          : types.isSet(v)
            ? 'Set'
            : types.isWeakMap(v)
              ? 'WeakMap'
              : types.isWeakSet(v)
                ? 'WeakSet'
                : null;
        if (kind) found = key === '' ? kind : `${kind} (at ${JSON.stringify(key)})`;
      }
      return v;
    });
  } catch {
    // A toJSON that throws the second time round: the first JSON stands.
  }
  return found;
}
