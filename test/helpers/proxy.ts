import net from 'node:net';

/**
 * A TCP proxy in front of PostgreSQL that can make connections half-open
 * (the socket stays connected but nothing passes any more, as when a NAT or
 * firewall silently drops a flow), or end new connections the way a server
 * that is shutting down does.
 */
export interface Proxy {
  url: string;
  /** Stops forwarding on every connection that has issued LISTEN. Returns how many. */
  blackholeListeners(): number;
  /** Stops forwarding on every open connection whose application_name starts with `prefix`. Returns how many. */
  blackholeApplications(prefix: string): number;
  /**
   * Silent connections with `prefix` that had a statement on them (sent
   * after they went silent, or whose answer came back after) and that the
   * client has since closed: it gave them up. An idle connection its pool
   * closed does not count.
   */
  givenUp(prefix: string): number;
  /**
   * The next `count` connections to finish their start-up are ended with the
   * FATAL a fast shutdown sends (57P01), in the same packet as the
   * ReadyForQuery that makes them usable: a server that starts shutting down
   * just as a connection is made does this.
   */
  endAsReady(count: number): void;
  /** Local ports of the proxy's open connections to PostgreSQL: pg_stat_activity.client_port of the backends behind it. */
  upstreamPorts(): number[];
  close(): Promise<void>;
}

/** The ErrorResponse PostgreSQL sends to every session when it is stopped with a fast shutdown. */
function adminShutdownMessage(): Buffer {
  const fields = Buffer.concat(
    [
      ['S', 'FATAL'],
      ['V', 'FATAL'],
      ['C', '57P01'],
      ['M', 'terminating connection due to administrator command'],
    ].map(([code, value]) => Buffer.from(`${code}${value}\0`)),
  );
  const body = Buffer.concat([fields, Buffer.from([0])]);
  const head = Buffer.alloc(5);
  head.write('E', 0);
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/**
 * Splits server bytes of a connection still starting up: the complete
 * messages up to and including the first ReadyForQuery ('Z'), whether that
 * was among them, and what is left.
 */
function splitAtReady(data: Buffer): { complete: Buffer; ready: boolean; rest: Buffer } {
  let at = 0;
  while (at + 5 <= data.length) {
    const end = at + 1 + data.readInt32BE(at + 1);
    if (end > data.length) break;
    const ready = data[at] === 0x5a;
    at = end;
    if (ready) return { complete: data.subarray(0, at), ready, rest: data.subarray(at) };
  }
  return { complete: data.subarray(0, at), ready: false, rest: data.subarray(at) };
}

export async function startProxy(target: string): Promise<Proxy> {
  const upstream = new URL(target);
  const pairs: Array<{
    client: net.Socket;
    server: net.Socket;
    listens: boolean;
    dead: boolean;
    application: string | null;
    unanswered: boolean;
    clientClosed: boolean;
  }> = [];
  let toEndAsReady = 0;
  const proxy = net.createServer((client) => {
    const server = net.connect(Number(upstream.port || 5432), upstream.hostname);
    const pair = {
      client,
      server,
      listens: false,
      dead: false,
      application: null as string | null,
      unanswered: false,
      clientClosed: false,
    };
    pairs.push(pair);
    // Server bytes of a connection still starting up that do not yet form a whole message.
    let partial: Buffer | null = Buffer.alloc(0);
    client.on('data', (chunk) => {
      // The start-up message names it: "application_name\0<name>\0".
      if (pair.application === null) pair.application = /application_name\0([^\0]*)\0/.exec(chunk.toString('latin1'))?.[1] ?? '';
      if (!pair.listens && chunk.includes('LISTEN "')) pair.listens = true;
      if (!pair.dead) server.write(chunk);
      else pair.unanswered = true;
    });
    server.on('data', (chunk) => {
      if (pair.dead) {
        // An answer to a statement sent before the connection went silent.
        pair.unanswered = true;
        return;
      }
      if (partial === null) {
        client.write(chunk);
        return;
      }
      const { complete, ready, rest } = splitAtReady(Buffer.concat([partial, chunk]));
      if (!ready) {
        // Authentication comes before ReadyForQuery, and the client must answer it.
        partial = rest;
        if (complete.length > 0) client.write(complete);
        return;
      }
      partial = null;
      if (toEndAsReady > 0) {
        toEndAsReady--;
        pair.dead = true;
        client.end(Buffer.concat([complete, adminShutdownMessage()]));
        server.destroy();
        return;
      }
      client.write(Buffer.concat([complete, rest]));
    });
    const end = () => {
      client.destroy();
      server.destroy();
    };
    client.on('error', end).on('close', () => {
      // Before end() below closes this side itself.
      if (!server.destroyed) pair.clientClosed = true;
      end();
    });
    server.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const port = (proxy.address() as net.AddressInfo).port;
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return {
    url: url.toString(),
    blackholeListeners() {
      const listeners = pairs.filter((p) => p.listens && !p.dead);
      for (const p of listeners) p.dead = true;
      return listeners.length;
    },
    blackholeApplications(prefix) {
      const matching = pairs.filter((p) => !p.dead && p.application?.startsWith(prefix));
      for (const p of matching) p.dead = true;
      return matching.length;
    },
    givenUp(prefix) {
      return pairs.filter((p) => p.dead && p.unanswered && p.clientClosed && p.application?.startsWith(prefix)).length;
    },
    endAsReady(count) {
      toEndAsReady += count;
    },
    upstreamPorts() {
      return pairs.filter((p) => !p.dead && !p.server.destroyed && p.server.localPort !== undefined).map((p) => p.server.localPort!);
    },
    async close() {
      for (const p of pairs) {
        p.client.destroy();
        p.server.destroy();
      }
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}
