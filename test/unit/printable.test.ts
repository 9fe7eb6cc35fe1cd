import { describe, expect, it } from 'vitest';
import { printable } from '../../supervisor/cli-output.ts';

describe('printable', () => {
  it('leaves plain text, emoji and accents as they are', () => {
    expect(printable('Error: café 🚀 failed')).toBe('Error: café 🚀 failed');
  });

  it('escapes terminal escape sequences, line breaks and bidirectional overrides', () => {
    expect(printable('a\u001b[2Jb\nc\td\re\u0007')).toBe('a\\u001b[2Jb\\nc\\td\\re\\u0007');
    expect(printable('x\u202ey\u2066z\u0085')).toBe('x\\u202ey\\u2066z\\u0085');
  });
});
