import type { Database } from '../db/port.js';
import { createFileNotifier, createJobServices, type Notifier, valuationDeps } from '../domain/index.js';
import { lendingSettingsFromEnv } from '../domain/settings.js';
import type { JobServices } from '../job-types/services.js';
import type { JobTracker } from '../jobs/tracker.js';
import { createDemoMarket, startDemoPriceFeed } from './demo-price-feed.js';
import type { Logger } from './logger.js';

export interface LocalServices {
  services: JobServices;
  /** Where notifications go locally. */
  outboxFile: string;
  priceUrl: string;
  close(): Promise<void>;
}

/**
 * The job services of the local runtime: notifications are appended to `.lana-jobs/outbox.jsonl` (and
 * logged); prices come from LANA_PRICE_URL, or from a simulated feed on 127.0.0.1 when it is unset.
 */
export async function createLocalServices(deps: {
  db: Database;
  tracker: Pick<JobTracker, 'enqueueUntyped' | 'pruneFinished' | 'clock'>;
  logger: Logger;
  /** Answer the first N price requests with HTTP 503 (the demo's retryable failure). */
  failFirstPriceRequests?: number;
  /** Where notifications are appended; default `.lana-jobs/outbox.jsonl` (tests give a folder of their own). */
  outboxFile?: string;
}): Promise<LocalServices> {
  const fileNotifier = createFileNotifier(deps.outboxFile);
  const notifier: Notifier = {
    async send(message, signal) {
      const sent = await fileNotifier.send(message, signal);
      deps.logger.info('notification sent', {
        to: message.to,
        subject: message.subject,
        outbox: fileNotifier.file,
      });
      return sent;
    },
  };
  const settings = lendingSettingsFromEnv();
  let priceUrl = settings.priceUrl;
  let priceUrls = [...(priceUrl ? [priceUrl] : []), ...settings.extraPriceUrls];
  let closeFeed = async () => {};
  if (!priceUrl) {
    // Two simulated sources quoting one simulated market, as production should have two or more
    // independent ones: the valuation cross-checks them.
    const market = createDemoMarket();
    const feeds = [
      await startDemoPriceFeed({ failFirst: deps.failFirstPriceRequests, market }),
      await startDemoPriceFeed({ failFirst: deps.failFirstPriceRequests, market }),
    ];
    priceUrl = feeds[0]!.url;
    priceUrls = feeds.map((f) => f.url);
    closeFeed = async () => {
      await Promise.all(feeds.map((f) => f.close()));
    };
    deps.logger.info('no LANA_PRICE_URL: using two simulated BTC/USD feeds', { urls: priceUrls });
  }
  const services = createJobServices({
    db: deps.db,
    tracker: deps.tracker,
    notifier,
    ...valuationDeps(settings, priceUrls),
    retentionDays: settings.retentionDays,
  });
  return { services, outboxFile: fileNotifier.file, priceUrl, close: closeFeed };
}
