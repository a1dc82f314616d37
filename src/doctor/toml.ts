// A small TOML reader for the client files the doctor checks (containerd's hosts.toml, podman's
// registries.conf drop-ins): tables, arrays of tables, dotted and quoted keys, strings (basic,
// literal, multi-line), numbers, booleans, dates kept as text, arrays and inline tables. It
// reports the first syntax error with its line, which is what the operator needs to fix.

export class TomlError extends Error {
  readonly line: number;
  constructor(line: number, message: string) {
    super(`line ${line}: ${message}`);
    this.line = line;
  }
}

export type TomlValue = string | number | boolean | TomlValue[] | TomlTable;
export interface TomlTable {
  [key: string]: TomlValue;
}

const BARE = /[A-Za-z0-9_-]/;
const ESCAPES: Record<string, string> = { b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', '"': '"', '\\': '\\', e: '\x1b' };

export function parseToml(text: string): TomlTable {
  return new Reader(text).document();
}

class Reader {
  readonly #s: string;
  #i = 0;
  readonly #root: TomlTable = {};

  constructor(text: string) {
    this.#s = text.replace(/\r\n/g, '\n');
  }

  #line(): number {
    let n = 1;
    for (let k = 0; k < this.#i && k < this.#s.length; k++) if (this.#s[k] === '\n') n++;
    return n;
  }

  #fail(message: string): never {
    throw new TomlError(this.#line(), message);
  }

  #peek(offset = 0): string | undefined {
    return this.#s[this.#i + offset];
  }

  #spaces(): void {
    while (this.#peek() === ' ' || this.#peek() === '\t') this.#i++;
  }

  /** Spaces, newlines and comments (inside arrays). */
  #blank(): void {
    for (;;) {
      this.#spaces();
      const c = this.#peek();
      if (c === '\n') this.#i++;
      else if (c === '#') this.#comment();
      else return;
    }
  }

  #comment(): void {
    while (this.#i < this.#s.length && this.#s[this.#i] !== '\n') this.#i++;
  }

  /** After a statement: spaces, maybe a comment, then a newline or the end. */
  #endOfLine(): void {
    this.#spaces();
    if (this.#peek() === '#') this.#comment();
    if (this.#i < this.#s.length && this.#peek() !== '\n') this.#fail(`unexpected ${JSON.stringify(this.#peek())} after a value`);
  }

  document(): TomlTable {
    let current = this.#root;
    for (;;) {
      this.#blank();
      if (this.#i >= this.#s.length) return this.#root;
      if (this.#peek() === '[') {
        const array = this.#peek(1) === '[';
        this.#i += array ? 2 : 1;
        this.#spaces();
        const path = this.#key();
        this.#spaces();
        if (this.#peek() !== ']' || (array && this.#peek(1) !== ']')) this.#fail(`a table header must end with ${array ? ']]' : ']'}`);
        this.#i += array ? 2 : 1;
        this.#endOfLine();
        current = array ? this.#arrayTable(path) : this.#table(path);
      } else {
        this.#pair(current);
        this.#endOfLine();
      }
    }
  }

  #table(path: string[]): TomlTable {
    let t = this.#root;
    for (const part of path) {
      const next = t[part];
      if (next === undefined) t = t[part] = {};
      else if (Array.isArray(next)) {
        const last = next[next.length - 1];
        if (typeof last !== 'object' || last === null || Array.isArray(last)) this.#fail(`${path.join('.')} is not a table`);
        t = last as TomlTable;
      } else if (typeof next === 'object') t = next;
      else this.#fail(`${path.join('.')} is already a value`);
    }
    return t;
  }

  #arrayTable(path: string[]): TomlTable {
    const parent = this.#table(path.slice(0, -1));
    const last = path[path.length - 1]!;
    const list = parent[last] ?? (parent[last] = []);
    if (!Array.isArray(list)) this.#fail(`${path.join('.')} is already a table, not an array of tables`);
    const table: TomlTable = {};
    list.push(table);
    return table;
  }

  #pair(into: TomlTable): void {
    const path = this.#key();
    this.#spaces();
    if (this.#peek() !== '=') this.#fail(`expected "=" after the key ${path.join('.')}`);
    this.#i++;
    this.#spaces();
    const value = this.#value();
    let t = into;
    for (const part of path.slice(0, -1)) {
      const next = t[part] ?? (t[part] = {});
      if (typeof next !== 'object' || Array.isArray(next)) this.#fail(`${path.join('.')}: ${part} is already a value`);
      t = next as TomlTable;
    }
    const last = path[path.length - 1]!;
    if (Object.hasOwn(t, last)) this.#fail(`the key ${path.join('.')} is set twice`);
    t[last] = value;
  }

  #key(): string[] {
    const parts: string[] = [];
    for (;;) {
      this.#spaces();
      const c = this.#peek();
      if (c === '"') parts.push(this.#basicString());
      else if (c === "'") parts.push(this.#literalString());
      else {
        const start = this.#i;
        while (this.#peek() !== undefined && BARE.test(this.#peek()!)) this.#i++;
        if (this.#i === start) this.#fail(c === undefined || c === '\n' ? 'a key is missing' : `${JSON.stringify(c)} cannot start a key`);
        parts.push(this.#s.slice(start, this.#i));
      }
      this.#spaces();
      if (this.#peek() !== '.') return parts;
      this.#i++;
    }
  }

  #value(): TomlValue {
    const c = this.#peek();
    if (c === '"') return this.#s.startsWith('"""', this.#i) ? this.#multiline('"""') : this.#basicString();
    if (c === "'") return this.#s.startsWith("'''", this.#i) ? this.#multiline("'''") : this.#literalString();
    if (c === '[') return this.#array();
    if (c === '{') return this.#inlineTable();
    const m = /^[^\s,\]}#]+/.exec(this.#s.slice(this.#i));
    if (!m) this.#fail('a value is missing');
    const word = m[0];
    this.#i += word.length;
    if (word === 'true') return true;
    if (word === 'false') return false;
    if (/^[+-]?(\d[\d_]*)(\.\d[\d_]*)?([eE][+-]?\d+)?$/.test(word) || /^0x[0-9A-Fa-f_]+$/.test(word)) return Number(word.replace(/_/g, ''));
    if (/^[+-]?(inf|nan)$/.test(word)) return Number(word.replace('inf', 'Infinity').replace('nan', 'NaN'));
    // A date or time: kept as written (nothing the doctor reads is one).
    if (/^\d{4}-\d{2}-\d{2}/.test(word) || /^\d{2}:\d{2}/.test(word)) return word;
    return this.#fail(`${JSON.stringify(word)} is not a value (a string needs quotes)`);
  }

  #basicString(): string {
    this.#i++;
    let out = '';
    for (;;) {
      const c = this.#peek();
      if (c === undefined || c === '\n') this.#fail('a string is not closed on its line');
      this.#i++;
      if (c === '"') return out;
      if (c === '\\') out += this.#escape();
      else out += c;
    }
  }

  #escape(): string {
    const e = this.#peek();
    this.#i++;
    if (e !== undefined && ESCAPES[e] !== undefined) return ESCAPES[e]!;
    if (e === 'u' || e === 'U') {
      const n = e === 'u' ? 4 : 8;
      const hex = this.#s.slice(this.#i, this.#i + n);
      if (!new RegExp(`^[0-9A-Fa-f]{${n}}$`).test(hex)) this.#fail(`\\${e} needs ${n} hex digits`);
      this.#i += n;
      return String.fromCodePoint(parseInt(hex, 16));
    }
    return this.#fail(`\\${e ?? ''} is not an escape`);
  }

  #literalString(): string {
    const end = this.#s.indexOf("'", this.#i + 1);
    const nl = this.#s.indexOf('\n', this.#i + 1);
    if (end < 0 || (nl >= 0 && nl < end)) this.#fail('a string is not closed on its line');
    const out = this.#s.slice(this.#i + 1, end);
    this.#i = end + 1;
    return out;
  }

  #multiline(quote: string): string {
    this.#i += 3;
    if (this.#peek() === '\n') this.#i++;
    let out = '';
    for (;;) {
      if (this.#i >= this.#s.length) this.#fail(`a ${quote} string is not closed`);
      if (this.#s.startsWith(quote, this.#i)) {
        this.#i += 3;
        return out;
      }
      const c = this.#s[this.#i++]!;
      if (quote === '"""' && c === '\\') {
        if (this.#peek() === '\n' || this.#peek() === ' ') {
          while (this.#peek() === '\n' || this.#peek() === ' ' || this.#peek() === '\t') this.#i++;
        } else out += this.#escape();
      } else out += c;
    }
  }

  #array(): TomlValue[] {
    this.#i++;
    const out: TomlValue[] = [];
    for (;;) {
      this.#blank();
      if (this.#peek() === ']') {
        this.#i++;
        return out;
      }
      if (this.#i >= this.#s.length) this.#fail('an array is not closed');
      out.push(this.#value());
      this.#blank();
      if (this.#peek() === ',') this.#i++;
      else if (this.#peek() !== ']') this.#fail('array items must be separated by ","');
    }
  }

  #inlineTable(): TomlTable {
    this.#i++;
    const out: TomlTable = {};
    this.#spaces();
    if (this.#peek() === '}') {
      this.#i++;
      return out;
    }
    for (;;) {
      this.#pair(out);
      this.#spaces();
      const c = this.#peek();
      this.#i++;
      if (c === '}') return out;
      if (c !== ',') this.#fail('an inline table must be closed by "}" on its line');
    }
  }
}
