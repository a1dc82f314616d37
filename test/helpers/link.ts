// A loopback TCP relay in front of an origin, standing for the site's uplink: its mode switches at
// run time between working ('up'), a black hole (packets vanish: connections are accepted and
// never answered, relayed ones freeze), a dead host ('refuse': nothing listens, connects are
// refused) and a middlebox that kills connections ('reset': TCP RST). Without a target it is a
// TLS black hole: it accepts and never sends a byte, so a TLS handshake never completes.
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export type LinkMode = 'up' | 'blackhole' | 'refuse' | 'reset';

/** A client connection and, once relayed, its connection to the target. */
interface Pair {
  client: Socket;
  target: Socket | null;
  /** What a held client sent (kept for the target if the link comes up while it waits). */
  held: Buffer[];
  release?: () => void;
}

export class Link {
  /** Connections accepted since start (refused ones never reach the relay). */
  accepted = 0;
  /** Connections relayed to the target (accepted while 'up'). */
  relayed = 0;
  readonly #target: { host: string; port: number } | null;
  readonly #server: Server;
  readonly #pairs = new Set<Pair>();
  #mode: LinkMode;
  #port = 0;

  private constructor(target: { host: string; port: number } | null, mode: LinkMode) {
    this.#target = target;
    this.#mode = mode;
    this.#server = createServer((client) => this.#accept(client));
  }

  /** A relay on 127.0.0.1 (a port of its own) to `target`, 'up'. */
  static async start(target: { host?: string; port: number }): Promise<Link> {
    const link = new Link({ host: target.host ?? '127.0.0.1', port: target.port }, 'up');
    await link.#listen(0);
    return link;
  }

  /** A server that accepts and never sends a byte: point a client at https://127.0.0.1:PORT for a TLS black hole. */
  static async blackhole(): Promise<Link> {
    const link = new Link(null, 'blackhole');
    await link.#listen(0);
    return link;
  }

  get port(): number {
    return this.#port;
  }

  get mode(): LinkMode {
    return this.#mode;
  }

  /** The relay's address with `scheme` (https for a TLS black hole). */
  url(scheme: 'http' | 'https' = 'http'): string {
    return `${scheme}://127.0.0.1:${this.#port}`;
  }

  /** Connections open now (held by a black hole or relayed). */
  get open(): number {
    return this.#pairs.size;
  }

  /** Switches the link; resolves once the new mode holds (the port listens again, or no longer). */
  async setMode(mode: LinkMode): Promise<void> {
    if (mode === 'up' && this.#target === null) throw new Error('a link without a target cannot be up');
    const was = this.#mode;
    this.#mode = mode;
    if (mode === 'refuse' || mode === 'reset') {
      // A dead host's kernel answers RST to the packets of connections it no longer knows.
      for (const pair of [...this.#pairs]) this.#reset(pair);
      if (mode === 'refuse' && this.#server.listening) await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    }
    if (mode !== 'refuse' && was === 'refuse') await this.#listen(this.#port);
    for (const pair of this.#pairs) {
      if (mode === 'blackhole' && pair.target !== null) {
        // Frozen: no byte read from either side, so none is forwarded; TCP keeps them queued.
        pair.client.pause();
        pair.target?.pause();
      } else if (mode === 'up') {
        // A connection held by the black hole goes through now, as its queued packets would.
        if (pair.target === null) this.#relay(pair);
        pair.client.resume();
        pair.target!.resume();
      }
    }
  }

  /** Stops listening and destroys every connection. */
  async close(): Promise<void> {
    for (const pair of [...this.#pairs]) {
      pair.client.destroy();
      pair.target?.destroy();
    }
    this.#pairs.clear();
    if (this.#server.listening) await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, '127.0.0.1', () => {
        this.#server.off('error', reject);
        this.#port = (this.#server.address() as { port: number }).port;
        resolve();
      });
    });
  }

  #accept(client: Socket): void {
    this.accepted++;
    client.on('error', () => {});
    if (this.#mode === 'reset') {
      reset(client);
      return;
    }
    const pair: Pair = { client, target: null, held: [] };
    this.#pairs.add(pair);
    client.on('close', () => {
      this.#pairs.delete(pair);
      pair.target?.destroy();
    });
    if (this.#mode === 'blackhole' || this.#target === null) {
      // Accepted and held: nothing answered until the client gives up. Its bytes are read (and
      // kept), so a client that gives up is seen to go and not relayed later.
      const hold = (chunk: Buffer) => pair.held.push(chunk);
      client.on('data', hold);
      pair.release = () => client.off('data', hold);
      return;
    }
    this.#relay(pair);
  }

  #relay(pair: Pair): void {
    const { client } = pair;
    this.relayed++;
    const target = createConnection(this.#target!.port, this.#target!.host);
    pair.target = target;
    pair.release?.();
    for (const chunk of pair.held.splice(0)) target.write(chunk);
    target.on('error', () => client.destroy());
    target.on('close', () => client.destroy());
    forward(client, target, () => this.#mode === 'up');
    forward(target, client, () => this.#mode === 'up');
  }

  #reset(pair: Pair): void {
    this.#pairs.delete(pair);
    reset(pair.client);
    if (pair.target) reset(pair.target);
  }
}

/**
 * Destroys `socket` with a TCP RST. A socket whose sending side is already shut down cannot be
 * reset (libuv refuses, and Node then leaves the handle open), so it is only destroyed.
 */
export function reset(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded || socket.readyState !== 'open') socket.destroy();
  else socket.resetAndDestroy();
}

/** Copies `from` to `to` with back-pressure; a drain resumes reading only while the link is up. */
function forward(from: Socket, to: Socket, up: () => boolean): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => {
    if (up()) from.resume();
  });
  from.on('end', () => to.end());
}
