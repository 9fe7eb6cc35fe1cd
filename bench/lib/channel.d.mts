export declare const CHANNEL_NAME: string;
export interface ThreadReport {
  kind: 'handled' | 'latency' | 'killed';
  count?: number;
  payload?: unknown;
  jobId?: string;
  atMs?: number;
}
export declare function listenToThreads(onReport: (report: ThreadReport) => void): { close(): void };
export declare function reportHandled(): void;
export declare function reportLatencyStart(payload: unknown, atMs: number): void;
export declare function reportKilled(jobId: string, atMs: number): void;
export declare function nowMs(): number;
