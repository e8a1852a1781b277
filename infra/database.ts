import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

export interface JobsDatabaseProps {
  databaseName: string;
  deletionProtection: boolean;
  minCapacity: number;
  maxCapacity: number;
  backupRetentionDays: number;
}

/**
 * The pinned engine: the newest Aurora PostgreSQL minor aws-cdk-lib lists that has the Data API
 * (Data API: 16.1+, 17.4+, 18.3+). Minor upgrades are taken by changing this pin and deploying, never by
 * RDS on its own (auto minor upgrade is off): a cluster RDS had upgraded would no longer match the
 * template, and the next deploy would try to set it back. docs/deploy.md says how to move the pin.
 */
export const ENGINE_VERSION = rds.AuroraPostgresEngineVersion.VER_18_6;

/** The database user every function but migrations connects as: DML on the tables, no DDL. */
export const APP_USER = 'lana_app';

/** How often Secrets Manager rotates the master and the application passwords. */
export const ROTATION_INTERVAL = Duration.days(30);

/**
 * Aurora PostgreSQL Serverless v2 with the Data API, in a VPC of isolated subnets. Nothing connects over
 * the network except the secret-rotation functions: the Lambda functions use the Data API (HTTPS), so
 * the VPC needs no NAT gateway and the functions need no VPC.
 *
 * Two secrets: the master user's (used by the migrations only) and the application user's (every other
 * function). The application user is created and granted by the migrations custom resource; its
 * password is rotated by the multi-user scheme (two users take turns, so the password the functions
 * hold stays valid while the other one changes). Neither secret rotates during the deploy that enables
 * rotation: the first rotation waits for the schedule.
 */
export class JobsDatabase extends Construct {
  readonly vpc: ec2.Vpc;
  readonly cluster: rds.DatabaseCluster;
  /** The master user's secret: migrations only. */
  readonly masterSecret: secretsmanager.ISecret;
  /** The application user's secret: every function but migrations. */
  readonly appSecret: secretsmanager.ISecret;
  readonly appUser = APP_USER;
  readonly databaseName: string;

  constructor(scope: Construct, id: string, props: JobsDatabaseProps) {
    super(scope, id);
    this.databaseName = props.databaseName;
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'db', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 }],
      // Nothing uses the default security group; restricting it would add a custom-resource Lambda.
      restrictDefaultSecurityGroup: false,
    });
    this.vpc.addFlowLog('FlowLog', {
      trafficType: ec2.FlowLogTrafficType.REJECT,
      destination: ec2.FlowLogDestination.toCloudWatchLogs(
        new logs.LogGroup(this, 'FlowLogGroup', {
          retention: logs.RetentionDays.ONE_MONTH,
          removalPolicy: RemovalPolicy.DESTROY,
        }),
      ),
    });
    // The rotation functions run in the isolated subnets and reach Secrets Manager through this endpoint.
    const secretsEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
      service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      subnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
    });

    const engine = rds.DatabaseClusterEngine.auroraPostgres({ version: ENGINE_VERSION });
    this.cluster = new rds.DatabaseCluster(this, 'Cluster', {
      engine,
      // Every session runs in UTC whatever the client, so SQL that converts between timestamp and
      // timestamptz means the same on AWS as in the tests; the Data API needs SCRAM passwords.
      parameterGroup: new rds.ParameterGroup(this, 'ClusterParameters', {
        engine,
        description: 'lana-jobs: sessions in UTC, SCRAM passwords',
        parameters: { timezone: 'UTC', password_encryption: 'scram-sha-256' },
      }),
      writer: rds.ClusterInstance.serverlessV2('writer', {
        publiclyAccessible: false,
        autoMinorVersionUpgrade: false,
      }),
      autoMinorVersionUpgrade: false,
      serverlessV2MinCapacity: props.minCapacity,
      serverlessV2MaxCapacity: props.maxCapacity,
      enableDataApi: true,
      defaultDatabaseName: props.databaseName,
      credentials: rds.Credentials.fromGeneratedSecret('lana_admin'),
      vpc: this.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      storageEncrypted: true,
      iamAuthentication: true,
      deletionProtection: props.deletionProtection,
      // A protected (production) cluster leaves a final snapshot; a dev stack is deleted outright.
      removalPolicy: props.deletionProtection ? RemovalPolicy.SNAPSHOT : RemovalPolicy.DESTROY,
      backup: { retention: Duration.days(props.backupRetentionDays), preferredWindow: '02:00-03:00' },
      preferredMaintenanceWindow: 'Sun:03:30-Sun:04:30',
      cloudwatchLogsExports: ['postgresql'],
      cloudwatchLogsRetention: logs.RetentionDays.ONE_MONTH,
    });
    this.masterSecret = this.cluster.secret!;
    this.cluster.addRotationSingleUser({
      automaticallyAfter: ROTATION_INTERVAL,
      rotateImmediatelyOnUpdate: false,
      endpoint: secretsEndpoint,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
    });

    // `masterarn` in the secret lets the multi-user rotation log in as master to change the clone's password.
    const appSecret = new rds.DatabaseSecret(this, 'AppSecret', {
      username: APP_USER,
      masterSecret: this.masterSecret,
    });
    this.appSecret = appSecret.attach(this.cluster);
    this.cluster.addRotationMultiUser('AppSecretRotation', {
      secret: this.appSecret,
      automaticallyAfter: ROTATION_INTERVAL,
      rotateImmediatelyOnUpdate: false,
      endpoint: secretsEndpoint,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
    });
  }
}
