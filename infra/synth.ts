import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { JobsStack } from './jobs-stack.js';
import { StackSettingError, stackPropsFromContext } from './settings.js';

/**
 * The CDK app: the jobs stack from context settings (infra/settings.ts, docs/deploy.md), with cdk-nag's
 * checks. `context` is for tests; `cdk synth` passes its `-c` settings and cdk.json's context itself.
 */
export function buildApp(context?: Record<string, unknown>): App {
  const app = new App(context ? { context } : undefined);
  const read = (key: string): unknown => app.node.tryGetContext(key);
  new JobsStack(app, (read('stackName') as string | undefined) ?? 'LanaJobs', stackPropsFromContext(read));
  Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
  return app;
}

/**
 * Runs the app as `cdk synth` does. A settings error is the deployer's to fix: one line naming the key
 * and what to give, exit code 1, no stack trace. Anything else is a bug and keeps its trace.
 */
export function runApp(stderr: NodeJS.WritableStream = process.stderr): number {
  try {
    buildApp();
    return 0;
  } catch (err) {
    if (!(err instanceof StackSettingError)) throw err;
    stderr.write(`lana-jobs stack: ${err.message}\n`);
    return 1;
  }
}
