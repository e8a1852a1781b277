import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';

/** Debian's chromium, used when the machine has it. */
export const DEBIAN_CHROMIUM_PATH = '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--no-zygote',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface ChromiumChoice {
  /** Where the browser comes from: Debian's package, or the npm package `@sparticuz/chromium`. */
  source: 'debian' | 'npm-package';
  executablePath: string;
}

/**
 * Which browser the console's browser tests drive: Debian's when present, otherwise the one that ships
 * inside the `@sparticuz/chromium` npm package (its binary is in the package and is unpacked to /tmp on
 * first use, so `npm install` is all a machine needs; nothing is downloaded at run time).
 * `debianPath` is a parameter so a test can show the package browser is used when Debian's is absent.
 */
export async function chooseChromium(debianPath = DEBIAN_CHROMIUM_PATH): Promise<ChromiumChoice> {
  if (existsSync(debianPath)) return { source: 'debian', executablePath: debianPath };
  const { default: packaged } = await import('@sparticuz/chromium');
  return { source: 'npm-package', executablePath: await packaged.executablePath() };
}

/** A headless chromium with a fresh profile directory (playwright passes it as --user-data-dir). */
export async function launchChromium(
  viewport = { width: 1280, height: 800 },
  debianPath = DEBIAN_CHROMIUM_PATH,
): Promise<{ browser: BrowserContext; choice: ChromiumChoice; close(): Promise<void> }> {
  const choice = await chooseChromium(debianPath);
  const userDataDir = mkdtempSync(join(tmpdir(), 'lana-console-chromium-'));
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: choice.executablePath,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
  });
  return {
    browser,
    choice,
    async close() {
      await browser.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
