export declare const CHANNEL_NAME: string;
export declare function reportHandled(): void;
export declare function reportLatencyStart(payload: unknown, atMs: number): void;
export declare function nowMs(): number;
