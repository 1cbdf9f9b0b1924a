import { Field, Float, ObjectType } from '@nestjs/graphql';
import type { Quote } from './quotes.service.js';

/** The GraphQL type of a quote: the same fields as the JSON of `GET /quotes/:symbol`. */
@ObjectType('Quote')
export class QuoteModel implements Quote {
  @Field()
  readonly symbol!: string;

  @Field(() => Float)
  readonly price!: number;

  @Field(() => String)
  readonly currency!: 'USD';
}
