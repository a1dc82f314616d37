// The thread that hashes large blobs for their writers (see file-digest.ts). It reads what a
// writer has put in its temp file and hashes it there, so the event loop that moves bytes between
// sockets and files does not spend a core's worth of time on SHA-256 while a blob arrives at
// line rate. Hashing the file rather than the chunks the network delivered checks the very bytes
// that will be published and served, and costs the event loop no copy at all.
import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { HashReply, HashRequest } from './file-digest.js';

interface Job {
  fd: number;
  hash: Hash;
  /** Bytes hashed so far. */
  pos: number;
  /** The first failure; every later request of the job answers with it. */
  error: Error | null;
}

/** One read buffer for every job: the thread hashes one job at a time. */
const buffer = Buffer.allocUnsafe(1024 * 1024);
const jobs = new Map<number, Job>();
const port = parentPort;
if (!port) throw new Error('hash-worker.js runs as a worker thread only');

/** Hashes the job's file from where it stopped up to `to`. */
function advance(job: Job, to: number): void {
  if (job.error) return;
  try {
    while (job.pos < to) {
      const n = readSync(job.fd, buffer, 0, Math.min(buffer.length, to - job.pos), job.pos);
      if (n === 0) throw new Error(`the temp file ends at byte ${job.pos}, before ${to}`);
      job.hash.update(n === buffer.length ? buffer : buffer.subarray(0, n));
      job.pos += n;
    }
  } catch (err) {
    job.error = err as Error;
  }
}

function close(id: number): void {
  const job = jobs.get(id);
  if (!job) return;
  jobs.delete(id);
  if (job.fd >= 0) closeSync(job.fd);
}

port.on('message', (m: HashRequest) => {
  switch (m.op) {
    case 'open': {
      let fd = -1;
      let error: Error | null = null;
      try {
        fd = openSync(m.path, 'r');
      } catch (err) {
        error = err as Error;
      }
      jobs.set(m.id, { fd, hash: createHash(m.algorithm), pos: 0, error });
      return;
    }
    case 'advance': {
      const job = jobs.get(m.id);
      if (job) advance(job, m.to);
      return;
    }
    case 'finish': {
      const job = jobs.get(m.id);
      let reply: HashReply;
      if (!job) reply = { id: m.id, error: 'unknown hash job' };
      else {
        advance(job, m.to);
        reply = job.error ? { id: m.id, error: job.error.message } : { id: m.id, hex: job.hash.digest('hex'), length: job.pos };
      }
      close(m.id);
      port.postMessage(reply);
      return;
    }
    case 'close':
      close(m.id);
      return;
  }
});
