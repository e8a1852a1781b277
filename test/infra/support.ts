import { App } from 'aws-cdk-lib';
import { JobsStack, type JobsStackProps } from '../../infra/jobs-stack.js';

/** A stack synthesised without running esbuild (bundling has its own test). */
export function synthStack(props: JobsStackProps = {}): JobsStack {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  return new JobsStack(app, 'Test', props);
}
