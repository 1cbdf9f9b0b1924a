import { Body, Controller, Get, Post } from '@nestjs/common';
import { RateLimit } from '../../lib/index.js';

@Controller()
export class ItemsController {
  @Get('items')
  @RateLimit('5/minute')
  findAll(): { item: string }[] {
    return [{ item: 'Foo' }, { item: 'Bar' }];
  }

  // Writes are costlier than reads, hence the tighter limit.
  @Post('create_item')
  @RateLimit('1/second')
  create(@Body() body: unknown): { message: string; data: unknown } {
    return { message: 'Item created', data: body };
  }
}
