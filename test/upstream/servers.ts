// Small in-process HTTP servers and upstream settings for the upstream and origin-tier tests.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import type { UpstreamConfig } from '../../src/config.js';
import { UpstreamClient } from '../../src/upstream/client.js';

export interface TestServer {
  url: string;
  port: number;
  server: Server;
  /** Every request seen, in order. */
  requests: IncomingMessage[];
  close(): Promise<void>;
}

/** Starts a node:http server on `host` port 0 (loopback only). */
export async function startServer(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  host = '127.0.0.1',
): Promise<TestServer> {
  const requests: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    requests.push(req);
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${port}`,
    port,
    server,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Upstream settings for a test server; short bounds so failures are quick. */
export function upstreamConfig(url: string, overrides: Partial<UpstreamConfig> = {}): UpstreamConfig {
  return {
    name: 'origin',
    url,
    username: null,
    password: null,
    ca: null,
    insecure: false,
    timeoutMs: 2000,
    bodyTimeoutMs: 2000,
    proxy: { httpProxy: null, httpsProxy: null, noProxy: null },
    tokenRealms: [],
    ...overrides,
  };
}

/** A client for `url` that is closed at teardown. */
export function testClient(
  t: { teardown(fn: () => unknown): void },
  url: string,
  overrides: Partial<UpstreamConfig> = {},
  options: Omit<ConstructorParameters<typeof UpstreamClient>[1], 'logger' | 'userAgent'> = {},
): UpstreamClient {
  const client = new UpstreamClient(upstreamConfig(url, overrides), { logger: pino({ level: 'silent' }), userAgent: 'cove-test/1', ...options });
  t.teardown(() => client.close());
  return client;
}

/** Reads a whole stream. */
export async function readAll(body: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
  return Buffer.concat(chunks);
}

export function basic(user: string, pass: string): string {
  return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
}
