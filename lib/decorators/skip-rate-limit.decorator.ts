import { SetMetadata } from '@nestjs/common';

export const SKIP_RATE_LIMIT_METADATA = 'rate-limit:skip';

/**
 * Exempts a controller or handler from every limit, `defaultLimit` included.
 * `@SkipRateLimit(false)` on a handler puts it back under limits its controller skipped.
 */
export const SkipRateLimit = (skip = true) => SetMetadata(SKIP_RATE_LIMIT_METADATA, skip);
