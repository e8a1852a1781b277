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
 * Aurora PostgreSQL Serverless v2 with the Data API, in a VPC of isolated subnets. Nothing connects over
 * the network except the secret-rotation function: the Lambda functions use the Data API (HTTPS), so
 * the VPC needs no NAT gateway and the functions need no VPC.
 */
export class JobsDatabase extends Construct {
  readonly vpc: ec2.Vpc;
  readonly cluster: rds.DatabaseCluster;
  readonly secret: secretsmanager.ISecret;
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
    // The rotation function runs in the isolated subnets and reaches Secrets Manager through this endpoint.
    const secretsEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
      service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      subnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
    });

    this.cluster = new rds.DatabaseCluster(this, 'Cluster', {
      // The Data API on Serverless v2 needs PostgreSQL 16.1 or later on the 16 line.
      engine: rds.DatabaseClusterEngine.auroraPostgres({ version: rds.AuroraPostgresEngineVersion.VER_16_8 }),
      writer: rds.ClusterInstance.serverlessV2('writer', { publiclyAccessible: false }),
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
    });
    this.secret = this.cluster.secret!;
    this.cluster.addRotationSingleUser({
      automaticallyAfter: Duration.days(30),
      endpoint: secretsEndpoint,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
    });
  }
}
