// Parsing `WWW-Authenticate` (RFC 7235 §4.1): one header may carry several challenges, each a
// scheme followed by comma-separated auth-params (token or quoted-string values) or a token68.
// A registry's Bearer challenge names the token realm, service and scope Cove must ask for.

/** One challenge: the scheme in lower case and its auth-params (names in lower case). */
export interface Challenge {
  /** Scheme, lower-cased: "bearer", "basic", … (schemes are case-insensitive). */
  scheme: string;
  /** Auth-params by lower-cased name; a token68 (e.g. `Negotiate abc==`) is kept under "". */
  params: Record<string, string>;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*/;

/**
 * Parses every challenge in a `WWW-Authenticate` value. Lenient where servers are sloppy
 * (unquoted values containing `/` or `:`, stray commas, unterminated quotes); never throws.
 * Several header lines may be joined with ", " before parsing.
 */
export function parseChallenges(header: string | readonly string[] | undefined | null): Challenge[] {
  if (header === undefined || header === null) return [];
  const text = typeof header === 'string' ? header : header.join(', ');
  const out: Challenge[] = [];
  let i = 0;
  const n = text.length;

  const skipWs = (): void => {
    while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TCHAR.test(text[i]!)) i++;
    return text.slice(start, i);
  };
  const readQuoted = (): string => {
    // At the opening quote. A backslash escapes the next character (quoted-pair).
    i++;
    let value = '';
    while (i < n && text[i] !== '"') {
      if (text[i] === '\\' && i + 1 < n) i++;
      value += text[i];
      i++;
    }
    i++; // closing quote (or past the end when unterminated)
    return value;
  };
  const readBareValue = (): string => {
    // A token by the grammar; read up to the next comma or space so `scope=repository:a/b:pull`
    // (not a valid token: ':' and '/' are not tchars) still comes through whole.
    const start = i;
    while (i < n && text[i] !== ',' && text[i] !== ' ' && text[i] !== '\t') i++;
    return text.slice(start, i);
  };

  while (i < n) {
    while (i < n && (text[i] === ',' || text[i] === ' ' || text[i] === '\t')) i++;
    if (i >= n) break;
    const scheme = readToken();
    if (scheme === '') {
      i++; // a character no grammar allows here: skip it rather than loop forever
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    skipWs();

    // token68: `Basic dXNlcg==` — a lone token (maybe '='-padded) followed by a comma or the end.
    const rest = text.slice(i);
    const t68 = TOKEN68.exec(rest);
    if (t68) {
      const after = rest.slice(t68[0].length).trimStart();
      if (after === '' || after.startsWith(',')) {
        // `realm=` alone would also match; a name followed by '=' with nothing after is a
        // param with an empty value only when the match has no letters after the '='.
        const m = t68[0];
        const eq = m.indexOf('=');
        if (eq > 0 && eq === m.length - 1 && TCHAR.test(m[0]!) && /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+=$/.test(m)) {
          challenge.params[m.slice(0, -1).toLowerCase()] = '';
        } else {
          challenge.params[''] = m;
        }
        i += m.length;
        continue;
      }
    }

    // auth-params until something that is not `name = value` (that is the next scheme).
    for (;;) {
      while (i < n && (text[i] === ',' || text[i] === ' ' || text[i] === '\t')) i++;
      if (i >= n) break;
      const save = i;
      const name = readToken();
      skipWs();
      if (name === '' || text[i] !== '=') {
        i = save; // the next challenge's scheme
        break;
      }
      i++; // '='
      skipWs();
      const value = text[i] === '"' ? readQuoted() : readBareValue();
      challenge.params[name.toLowerCase()] = value;
      skipWs();
      if (i < n && text[i] !== ',') {
        // Garbage after a value: skip to the next comma and carry on.
        while (i < n && text[i] !== ',') i++;
      }
    }
  }
  return out;
}

/** The first challenge with the given (case-insensitive) scheme, or undefined. */
export function findChallenge(challenges: readonly Challenge[], scheme: string): Challenge | undefined {
  const wanted = scheme.toLowerCase();
  return challenges.find((c) => c.scheme === wanted);
}
