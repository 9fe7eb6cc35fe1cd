import { GrapevineError } from './errors.ts';
import type { NewJob } from './sql/jobs.ts';

/**
 * Dependencies between jobs (docs/workflows.md): the fields a job spec may
 * carry, and the flow builder's ordering of jobs named locally. The database
 * settles the rest (src/schema/functions/add_jobs_after.sql); this only
 * refuses bad input before it travels, with the names the caller used.
 */

/** What a dependent does when one of its dependencies fails for good or is cancelled. */
export type DependencyFailure = 'fail' | 'run' | 'ignore';

const FAILURE_POLICIES: readonly DependencyFailure[] = ['fail', 'run', 'ignore'];

/** SQLSTATE of the database's refusals (unknown dependency, bad position, bad policy). */
const DEPENDENCY_SQLSTATE = 'GV001';

export interface DependencyOptions {
  /** Ids of jobs this one waits for: it runs once they have all succeeded. */
  dependsOn?: ReadonlyArray<string | number>;
  /**
   * When a dependency fails for good or is cancelled (default "fail"):
   * - fail: this job fails too (is cancelled, for a cancelled dependency), and its own dependents follow their policy.
   * - run: this job becomes due at once, without waiting for its other dependencies.
   * - ignore: the dependency counts as done; this job runs when the others have finished.
   */
  onDependencyFailure?: DependencyFailure;
}

/** The row fields of a job's dependencies; none for a job without (so a plain batch stays plain). */
export function dependencyFields(spec: DependencyOptions, task: string): Pick<NewJob, 'depends_on' | 'on_dependency_failure'> {
  const { dependsOn, onDependencyFailure } = spec;
  if (onDependencyFailure !== undefined && !FAILURE_POLICIES.includes(onDependencyFailure)) {
    throw invalid(
      `onDependencyFailure of task "${task}" is ${JSON.stringify(onDependencyFailure)}: use one of ${FAILURE_POLICIES.join(', ')}`,
    );
  }
  if (dependsOn === undefined) return onDependencyFailure === undefined ? {} : { on_dependency_failure: onDependencyFailure };
  if (!Array.isArray(dependsOn)) throw invalid(`dependsOn of task "${task}" must be an array of job ids`);
  const ids = dependsOn.map((id) => {
    const text = String(id);
    if (!/^[1-9][0-9]{0,17}$/.test(text)) {
      throw invalid(`dependsOn of task "${task}" holds ${JSON.stringify(id)}, which is not a job id: job ids are positive integers`);
    }
    return text;
  });
  return { depends_on: ids, ...(onDependencyFailure === undefined ? {} : { on_dependency_failure: onDependencyFailure }) };
}

/** A job of a flow: `name` is local to the flow, and `after` names the flow's jobs it waits for. */
export interface FlowNode {
  name: string;
  after?: readonly string[];
}

/**
 * The flow's jobs in an order where each comes after the jobs it waits for
 * (the order the database requires, so that no batch holds a cycle), as
 * indexes into `nodes`, with each job's `after` as 1-based positions in that
 * order. Refuses duplicate and unknown names, and cycles, naming them.
 */
export function orderFlow(nodes: readonly FlowNode[]): { order: number[]; after: number[][] } {
  const index = new Map<string, number>();
  nodes.forEach((node, i) => {
    if (typeof node?.name !== 'string' || node.name.length === 0) {
      throw invalid(`job ${i + 1} of the flow has no name: give every job of a flow a name of its own`);
    }
    if (index.has(node.name)) throw invalid(`two jobs of the flow are named "${node.name}": names must be unique within a flow`);
    index.set(node.name, i);
  });
  const waitsFor = nodes.map((node) => {
    if (node.after !== undefined && !Array.isArray(node.after)) throw invalid(`after of "${node.name}" must be an array of names`);
    return [...new Set(node.after ?? [])].map((name) => {
      const at = index.get(name);
      if (at === undefined) throw invalid(`"${node.name}" comes after "${name}", which is not a job of this flow`);
      return at;
    });
  });
  // Depth-first, in the given order, so a flow already in order keeps it.
  const state = new Array<0 | 1 | 2>(nodes.length).fill(0);
  const order: number[] = [];
  const path: number[] = [];
  const visit = (i: number) => {
    if (state[i] === 2) return;
    if (state[i] === 1) {
      const cycle = [...path.slice(path.indexOf(i)), i].map((j) => `"${nodes[j].name}"`);
      throw invalid(`the flow has a cycle: ${cycle.join(' waits for ')}; a job cannot wait for itself, even through others`);
    }
    state[i] = 1;
    path.push(i);
    for (const j of waitsFor[i]) visit(j);
    path.pop();
    state[i] = 2;
    order.push(i);
  };
  for (let i = 0; i < nodes.length; i++) visit(i);
  const position = new Map(order.map((node, at) => [node, at + 1]));
  return { order, after: order.map((i) => waitsFor[i].map((j) => position.get(j)!)) };
}

/** The database's refusal of a dependency as GRAPEVINE_DEPENDENCY_INVALID; any other error as it is. */
export function explainDependencyError(err: unknown): unknown {
  if ((err as { code?: unknown } | null)?.code === DEPENDENCY_SQLSTATE) {
    return new GrapevineError('GRAPEVINE_DEPENDENCY_INVALID', (err as Error).message, { cause: err });
  }
  return err;
}

function invalid(message: string): GrapevineError {
  return new GrapevineError('GRAPEVINE_DEPENDENCY_INVALID', message);
}
