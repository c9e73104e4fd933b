// The dashboard in headless Chromium, as a lab admin uses it: from the viewer's link, signs in,
// reads the storage report of the lab with its plots, then the cost calculator; prints what it
// saw as one JSON line, which tests/viewer/test_dashboard.py judges.
// Input (JSON on stdin): { url, chromium, profile, person, password }.

import { WAIT, launch, readConfig, signIn, watch } from './browser.mjs';

const config = await readConfig();
const { context, page } = await launch(config);
const seen = {};
try {
  const settle = watch(page, seen, config.url);
  await page.goto(`${config.url}/`);
  await page.waitForSelector('form#signin', { timeout: WAIT });
  seen.link = await page.getAttribute('header nav a[href="dashboard.html"]', 'href');
  await page.click('header nav a[href="dashboard.html"]');
  await page.waitForURL(/dashboard\.html/, { timeout: WAIT });
  seen.sign_in = await signIn(page, config.person, config.password);

  // the storage tab: the lab's figures, and its plots drawn from blob: URLs
  await page.waitForSelector('.report table.figures', { timeout: WAIT });
  await page.waitForFunction(() => {
    const images = [...document.querySelectorAll('.plots img')];
    return images.length === 4 && images.every((img) => img.complete && img.naturalWidth > 0);
  }, null, { timeout: WAIT });
  seen.storage = await page.evaluate(() => ({
    labs: [...document.querySelectorAll('#lab option')].map((option) => option.value),
    tiers: [...document.querySelectorAll('.report table.figures')][0].innerText,
    perLab: [...document.querySelectorAll('.report table.figures')][1].innerText,
    interest: document.querySelector('.report .interest').textContent,
    plots: [...document.querySelectorAll('.plots img')].map((img) => ({
      plot: img.dataset.plot, width: img.naturalWidth, blob: img.src.startsWith('blob:'),
    })),
  }));

  // the costs tab: the calculator with its defaults, then a preset
  await page.click('#tab-costs');
  await page.waitForSelector('#costs-panel .costs-result table.figures', { timeout: WAIT });
  await page.selectOption('#cost-preset', 'private');
  const answered = page.waitForResponse((response) => response.url().includes('/api/costs?preset=private'), { timeout: WAIT });
  await page.click('#costs button[type="submit"]');
  await answered;
  await page.waitForFunction(() => document.querySelector('.costs-result')?.innerText.includes('Cost per slide'), null, { timeout: WAIT });
  seen.costs = await page.evaluate(() => document.querySelector('.costs-result table.figures').innerText);
  await settle();
} finally {
  await context.close();
}
console.log(JSON.stringify(seen));
