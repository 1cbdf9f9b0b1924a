import { Controller, Get, Req } from '@nestjs/common';
import { RateLimit } from '../../lib/index.js';
import { requestUser } from '../users/request-user.js';
import type { UserRequest } from '../users/user.interface.js';
import { UserIdKeyResolver } from './user-id.key-resolver.js';

@Controller('user_data')
export class UserDataController {
  @Get()
  @RateLimit('10/minute', { key: UserIdKeyResolver })
  getUserData(@Req() request: UserRequest): { message: string } {
    const user = requestUser(request);
    return { message: user ? `Data for user ${user.id}` : 'Data for anonymous user' };
  }
}
