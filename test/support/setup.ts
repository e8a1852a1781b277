import 'aws-sdk-client-mock-vitest/extend';

// The AWS SDK warns once per process that its releases after January 2027 need Node 22 (Lambda runs
// nodejs22.x; local tests run on Node 20). Its documented switch turns the notice off in tests only.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
