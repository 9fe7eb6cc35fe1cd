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
