/** Method names by handler, found once each. */
const methodNames = new WeakMap<Function, string>();

/**
 * A route's name, `Controller.method`: the name of its budget, its policy and its logs. The
 * method is named by the property that holds the handler, not by the function's own name, which
 * decorators that wrap a method leave empty (Nest's `@GrpcStreamMethod`): two such methods would
 * otherwise share one name, and one budget.
 */
export function routeName(controller: Function, handler: Function): string {
  let method = methodNames.get(handler);
  if (method === undefined) methodNames.set(handler, (method = methodName(controller, handler)));
  return `${controller.name}.${method}`;
}

function methodName(controller: Function, handler: Function): string {
  for (let proto = controller.prototype; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (key !== 'constructor' && Object.getOwnPropertyDescriptor(proto, key)?.value === handler) return key;
    }
  }
  return handler.name;
}
