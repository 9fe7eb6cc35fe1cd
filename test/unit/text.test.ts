import { describe, expect, it } from 'vitest';
import { storableText } from '../../src/text.ts';

const EMOJI = '\u{1F600}'; // two UTF-16 units: \ud83d \ude00

describe('storableText', () => {
  it('returns ordinary text as it is, emoji and control characters included', () => {
    const text = `ok ${EMOJI} tab\there\nnewline \u0001`;
    expect(storableText(text, 1000)).toBe(text);
  });

  it('replaces NUL characters with U+FFFD', () => {
    expect(storableText('a\u0000b\u0000', 100)).toBe('a\ufffdb\ufffd');
  });

  it('replaces lone surrogates, high or low, first or last, and keeps whole pairs', () => {
    expect(storableText('\ud800x', 100)).toBe('\ufffdx');
    expect(storableText('x\udc00', 100)).toBe('x\ufffd');
    expect(storableText(`\ude00${EMOJI}\ud83d`, 100)).toBe(`\ufffd${EMOJI}\ufffd`);
    expect(storableText('\udc00\ud800', 100)).toBe('\ufffd\ufffd');
  });

  it('cuts long text to at most maxChars, ending in an ellipsis', () => {
    const cut = storableText('abcdefghij', 5);
    expect(cut).toBe('abcd…');
    expect(cut.length).toBe(5);
    expect(storableText('abcde', 5)).toBe('abcde');
  });

  it('never cuts between the halves of a surrogate pair', () => {
    // The pair sits at units 3-4: a cut after unit 4 keeps it, a cut inside it drops it whole.
    expect(storableText(`abc${EMOJI}defg`, 6)).toBe(`abc${EMOJI}…`);
    expect(storableText(`abc${EMOJI}defg`, 5)).toBe('abc…');
    for (let max = 1; max <= 12; max++) {
      const cut = storableText(EMOJI.repeat(6), max);
      expect(cut.length, `max ${max}`).toBeLessThanOrEqual(max);
      // A lone surrogate left by the cut would have become U+FFFD.
      expect(cut, `max ${max}`).not.toContain('\ufffd');
    }
  });

  it('cleans what a cut leaves, and gives nothing for a limit below one', () => {
    expect(storableText('a\u0000bcdef', 4)).toBe('a\ufffdb…');
    expect(storableText('abc', 0)).toBe('');
  });
});
