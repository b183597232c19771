import { fileDiffs } from '../diff';

const TWO_FILES = `--- /dev/null
+++ b/notes/new.md
@@ -0,0 +1 @@
+hello
--- a/src/app.py
+++ b/src/app.py
@@ -1,2 +1,2 @@
-print("hi")
+print("hello")
 x = 1
`;

describe('fileDiffs', () => {
  it('splits one unified diff into files with their action', () => {
    const files = fileDiffs(TWO_FILES);
    expect(files.map(f => [f.path, f.action])).toEqual([
      ['notes/new.md', 'create'],
      ['src/app.py', 'modify']
    ]);
    expect(files[1].diff).toContain('+print("hello")');
  });

  it('reads a list of per-file diffs', () => {
    const files = fileDiffs({ files: [{ path: 'gone.txt', action: 'delete', diff: '--- a/gone.txt\n+++ /dev/null\n' }] });
    expect(files).toEqual([{ path: 'gone.txt', action: 'delete', diff: '--- a/gone.txt\n+++ /dev/null\n' }]);
  });

  it('finds nothing to show as a diff in a shell command preview', () => {
    expect(fileDiffs({ command: 'make deploy', cwd: '.' })).toEqual([]);
  });
});
