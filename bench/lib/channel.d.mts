export declare const CHANNEL_NAME: string;
export interface ThreadReport {
  kind: 'handled' | 'latency';
  count?: number;
  payload?: unknown;
  atMs?: number;
}
export declare function listenToThreads(onReport: (report: ThreadReport) => void): { close(): void };
export declare function reportHandled(): void;
export declare function reportLatencyStart(payload: unknown, atMs: number): void;
export declare function nowMs(): number;
