import net from 'node:net';

/**
 * A TCP proxy in front of PostgreSQL that can make the LISTEN connection
 * half-open: its socket stays connected but nothing passes any more, as when
 * a NAT or firewall silently drops a long-idle flow.
 */
export interface Proxy {
  url: string;
  /** Stops forwarding on every connection that has issued LISTEN. Returns how many. */
  blackholeListeners(): number;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<Proxy> {
  const upstream = new URL(target);
  const pairs: Array<{ client: net.Socket; server: net.Socket; listens: boolean; dead: boolean }> = [];
  const proxy = net.createServer((client) => {
    const server = net.connect(Number(upstream.port || 5432), upstream.hostname);
    const pair = { client, server, listens: false, dead: false };
    pairs.push(pair);
    client.on('data', (chunk) => {
      if (!pair.listens && chunk.includes('LISTEN "')) pair.listens = true;
      if (!pair.dead) server.write(chunk);
    });
    server.on('data', (chunk) => {
      if (!pair.dead) client.write(chunk);
    });
    const end = () => {
      client.destroy();
      server.destroy();
    };
    client.on('error', end).on('close', end);
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
    async close() {
      for (const p of pairs) {
        p.client.destroy();
        p.server.destroy();
      }
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}
