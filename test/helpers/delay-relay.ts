// A loopback TCP relay that delivers every byte late: each chunk, in either direction, is passed on
// `delayMs` after it arrived, in order. It stands for a peer that answers slowly (an overloaded
// host, a congested switch port): round trips grow by twice the delay, throughput does not shrink
// (the relay reads ahead, up to a bound, while bytes wait). An end or a broken connection reaches
// the other side late too, after the bytes before it.
import { createConnection, createServer, type Server, type Socket } from 'node:net';

/** Bytes a direction may hold while they wait; past it the sender is paused. */
const HOLD_BYTES = 16 * 1024 * 1024;

type Item = { at: number; chunk: Buffer } | { at: number; end: 'end' | 'destroy' };

export class DelayRelay {
  /** Connections accepted since start. */
  accepted = 0;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #port = 0;

  /** Where connections go; null until set (a connection accepted before then is closed). */
  target: { host: string; port: number } | null;

  private constructor(
    target: { host: string; port: number } | null,
    readonly delayMs: number,
  ) {
    this.target = target;
    this.#server = createServer((client) => this.#accept(client));
  }

  /**
   * A relay on 127.0.0.1 (a port of its own) to `target`, delaying each direction by `delayMs`.
   * Without a target yet, set `target` later: a relay can then hold its port before the port of
   * what it fronts is picked, so the two never collide.
   */
  static async start(target: { host?: string; port: number } | null, delayMs: number): Promise<DelayRelay> {
    const relay = new DelayRelay(target && { host: target.host ?? '127.0.0.1', port: target.port }, delayMs);
    await new Promise<void>((resolve, reject) => {
      relay.#server.once('error', reject);
      relay.#server.listen(0, '127.0.0.1', () => {
        relay.#server.off('error', reject);
        relay.#port = (relay.#server.address() as { port: number }).port;
        resolve();
      });
    });
    return relay;
  }

  get port(): number {
    return this.#port;
  }

  url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** Stops listening, drops every connection and every byte still waiting. */
  async close(): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    if (this.#server.listening) await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    this.accepted++;
    if (this.target === null) {
      client.destroy();
      return;
    }
    const target = createConnection(this.target.port, this.target.host);
    for (const socket of [client, target]) {
      this.#sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => this.#sockets.delete(socket));
    }
    this.#delayed(client, target);
    this.#delayed(target, client);
  }

  /** Passes `from`'s bytes, its end or its breaking, to `to` `delayMs` after each happened. */
  #delayed(from: Socket, to: Socket): void {
    const queue: Item[] = [];
    let held = 0;
    let timer: NodeJS.Timeout | null = null;
    let closed = false;
    const schedule = () => {
      if (timer !== null || queue.length === 0) return;
      const t = setTimeout(() => {
        this.#timers.delete(t);
        timer = null;
        pump();
      }, Math.max(0, queue[0]!.at - Date.now()));
      timer = t;
      this.#timers.add(t);
    };
    const pump = () => {
      while (queue.length > 0 && queue[0]!.at <= Date.now()) {
        const item = queue.shift()!;
        if ('end' in item) {
          if (item.end === 'end') to.end();
          else to.destroy();
          return;
        }
        held -= item.chunk.length;
        if (!to.destroyed) to.write(item.chunk);
      }
      if (held < HOLD_BYTES && from.isPaused() && !from.destroyed) from.resume();
      schedule();
    };
    from.on('data', (chunk: Buffer) => {
      queue.push({ at: Date.now() + this.delayMs, chunk });
      held += chunk.length;
      if (held >= HOLD_BYTES) from.pause();
      schedule();
    });
    from.on('end', () => {
      closed = true;
      queue.push({ at: Date.now() + this.delayMs, end: 'end' });
      schedule();
    });
    from.on('close', () => {
      if (closed) return;
      closed = true;
      queue.push({ at: Date.now() + this.delayMs, end: 'destroy' });
      schedule();
    });
  }
}
