import { RouteTable } from '../../lib/rules/route-table.js';

class Base {
  handle() {}
}
class First extends Base {}
class Second extends Base {}

describe('RouteTable', () => {
  it('builds once per controller and handler, even for a handler two controllers inherit', () => {
    const table = new RouteTable<string>();
    const built: string[] = [];
    const build = (controller: Function, handler: Function) => {
      built.push(`${controller.name}.${handler.name}`);
      return `${controller.name}#${built.length}`;
    };
    const handler = Base.prototype.handle;
    expect(table.get(First, handler, build)).toBe('First#1');
    expect(table.get(Second, handler, build)).toBe('Second#2');
    expect(table.get(First, handler, build)).toBe('First#1');
    expect(table.get(Second, handler, build)).toBe('Second#2');
    expect(built).toEqual(['First.handle', 'Second.handle']);
  });

  it('keeps a value built as undefined, without building it again', () => {
    const table = new RouteTable<string | undefined>();
    let builds = 0;
    const build = () => {
      builds++;
      return undefined;
    };
    expect(table.get(First, Base.prototype.handle, build)).toBeUndefined();
    expect(table.get(First, Base.prototype.handle, build)).toBeUndefined();
    expect(builds).toBe(1);
  });

  it('replaces a promise by its value once ready, and forgets one that failed so the next call builds again', async () => {
    const table = new RouteTable<string>();
    const handler = Base.prototype.handle;
    const ready = table.get(First, handler, () => Promise.resolve('plan'));
    await ready;
    expect(table.get(First, handler, () => 'rebuilt')).toBe('plan');

    let attempts = 0;
    const failing = () => (++attempts === 1 ? Promise.reject(new Error('resolver failed')) : 'second try');
    await expect(table.get(Second, handler, failing)).rejects.toThrow('resolver failed');
    expect(table.get(Second, handler, failing)).toBe('second try');
    expect(table.get(First, handler, () => 'rebuilt')).toBe('plan'); // the other controller's entry stays
  });
});
